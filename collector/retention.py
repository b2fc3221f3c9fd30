"""History retention: compact what is older than the retention period, now and daily.

``compact`` is what ``posture-collector history compact --keep-days N`` runs once; ``serve
--retention-days N`` runs it at start and then every day in a thread of its own, on its own
database connection (each host is compacted in its own short transaction, so ingest waits
at most for one host's). Compaction keeps the state at every instant after the boundary
(``collector.store.history``); reports as of earlier instants are refused from then on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from collector.store import SqliteStore

__all__ = ["RetentionThread", "compact"]

log = logging.getLogger("posture.retention")

DAY = timedelta(days=1)


def compact(store: SqliteStore, keep_days: int, now: datetime) -> tuple[datetime, int]:
    """Compact history older than ``keep_days`` before ``now``; returns (boundary, rows
    deleted)."""
    if keep_days < 1:
        raise ValueError("retention must keep at least one day of history")
    boundary = now - timedelta(days=keep_days)
    host_ids = [host.id for host in store.list_hosts()]
    return boundary, store.compact_history(boundary, host_ids)


class RetentionThread:
    """Runs ``compact`` on the database at ``db_path`` at start and every day until stopped."""

    def __init__(self, db_path: Path, keep_days: int, clock: Callable[[], datetime]) -> None:
        self._db_path = db_path
        self._keep_days = keep_days
        self._clock = clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posture-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        store = SqliteStore(self._db_path)
        try:
            while not self._stopping.is_set():
                try:
                    boundary, deleted = compact(store, self._keep_days, self._clock())
                    log.info("history before %s compacted (%d rows)", boundary, deleted)
                except Exception:  # the next day's run tries again
                    log.exception("history compaction failed")
                self._stopping.wait(DAY.total_seconds())
        finally:
            store.close()
