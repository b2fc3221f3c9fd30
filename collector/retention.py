"""History retention: compact what is older than the retention period, now and daily.

``compact`` is what ``posture-collector history compact --keep-days N`` runs once; ``serve
--retention-days N`` runs it in a thread of its own, on its own database connection (each
host is compacted in its own short transaction, so ingest waits at most for one host's).
Compaction keeps the state at every instant after the boundary (``collector.store.history``);
reports as of earlier instants are refused from then on.

With several collectors on one database, compaction runs once a day across all of them: each
asks hourly (and at start) to claim the day (``collector.jobs.claim_period``), and only the
first to ask after the previous day's claim ended compacts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from collector.jobs import claim_period, instance_id
from collector.store import SqliteStore, open_store

__all__ = ["JOB", "RetentionThread", "compact"]

log = logging.getLogger("posture.retention")

DAY = timedelta(days=1)
#: The lease name of the daily compaction.
JOB = "retention"


def compact(store: SqliteStore, keep_days: int, now: datetime) -> tuple[datetime, int]:
    """Compact history older than ``keep_days`` before ``now``; returns (boundary, rows
    deleted)."""
    if keep_days < 1:
        raise ValueError("retention must keep at least one day of history")
    boundary = now - timedelta(days=keep_days)
    host_ids = [host.id for host in store.list_hosts()]
    return boundary, store.compact_history(boundary, host_ids)


class RetentionThread:
    """Runs ``compact`` on the database at ``location`` (a path or URL) once a day across
    the collectors sharing it, until stopped. ``check_seconds``: how often it asks."""

    def __init__(
        self,
        location: str | Path,
        keep_days: int,
        clock: Callable[[], datetime],
        *,
        holder: str | None = None,
        check_seconds: float = 3600.0,
    ) -> None:
        self._location = location
        self._keep_days = keep_days
        self._clock = clock
        self._holder = holder or instance_id()
        self._check_seconds = check_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posture-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def run_if_due(self, store: SqliteStore) -> bool:
        """Compact if this collector claims today's run; True if it did."""
        if not claim_period(store, JOB, self._holder, self._clock(), DAY):
            return False
        boundary, deleted = compact(store, self._keep_days, self._clock())
        log.info("history before %s compacted (%d rows)", boundary, deleted)
        return True

    def _run(self) -> None:
        store = open_store(self._location, pool_size=2)
        try:
            while not self._stopping.is_set():
                try:
                    self.run_if_due(store)
                except Exception:  # the next check tries again
                    log.exception("history compaction failed")
                self._stopping.wait(self._check_seconds)
        finally:
            store.close()
