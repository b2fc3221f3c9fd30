"""SQLite storage through sqlite-utils: the embedded default engine.

sqlite-utils owns the schema and the convenient reads; the hot path (applying a batch)
uses its underlying connection with ``executemany``, as GOALS.md measured. The database runs
in WAL mode with ``synchronous=FULL``: a batch is acknowledged only after its commit, and a
committed batch survives a crash or a power cut. One writer at a time: the service calls this
from a single worker thread; readers (policy evaluation, reports) use their own connections
or read transactions, and the CLI's writes (waivers, baselines) wait for the lock.

The methods live in one mixin per noun (``hosts``, ``ingest``, ``results``, ``drift``,
``groups``, ``waivers``, ``history``) on ``StoreBase``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from collector.policy.evaluate import FactSource, FileFactSource
from collector.store.access import AccessMixin
from collector.store.audit import AuditMixin
from collector.store.dashboard import DashboardMixin
from collector.store.delivery import DeliveryMixin
from collector.store.drift import DriftMixin
from collector.store.groups import GroupsMixin
from collector.store.history import HistoryMixin
from collector.store.hosts import HostsMixin
from collector.store.identity import IdentityMixin
from collector.store.ingest import FactsMixin
from collector.store.leases import LeasesMixin
from collector.store.report_reads import ReportReadsMixin
from collector.store.results import ResultsMixin
from collector.store.schema import migrate
from collector.store.waivers import WaiversMixin

__all__ = ["SqliteStore"]


class SqliteStore(
    HostsMixin,
    FactsMixin,
    ResultsMixin,
    DriftMixin,
    GroupsMixin,
    WaiversMixin,
    HistoryMixin,
    DeliveryMixin,
    AuditMixin,
    DashboardMixin,
    AccessMixin,
    IdentityMixin,
    LeasesMixin,
    ReportReadsMixin,
):
    """The collector's storage on one SQLite file.

    Its bases are the storage contract: ``PostgresStore`` (collector.store.postgres) is
    this class on another connection, so a mixin added here serves both engines.
    """

    engine = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        #: What ``collector.store.open_store`` reopens this store from (other threads).
        self.location = str(path)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        self.db = Database(conn)
        self.conn = conn
        self.notify_events = False
        migrate(self.db)

    def fact_source(self) -> FactSource:
        """Where policy evaluation reads this store's facts: the file itself, read-only."""
        return FileFactSource(self.path)

    def close(self) -> None:
        self.conn.close()
