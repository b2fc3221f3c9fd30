"""The agent's durable state: spooled batches, what was sent, and its enrollment.

One SQLite file, so that spooling a batch, advancing the sequence number and remembering
the digests it was diffed against happen in one transaction: a crash at any moment leaves
either the whole batch or none of it. A batch leaves the spool only when the collector
acknowledges its seq. ``synchronous=FULL`` because a laptop's battery can die at any time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.collect import Collection, TableResult

__all__ = ["Enrollment", "Spool", "SpooledBatch"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    collected_at_ms INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_digests (table_name TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Enrollment:
    collector: str
    ca_cert: str
    host_id: str
    credential: str


@dataclass(frozen=True)
class SpooledBatch:
    seq: int
    collected_at_ms: int
    changed: dict[str, TableResult]
    digests: dict[str, str]
    plan_version: str
    full: bool


class Spool:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_SCHEMA)
        path.chmod(0o600)  # holds the agent credential
        # The daemon calls in from worker threads; one connection, one caller at a time.
        self._lock = threading.RLock()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _read(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.conn.execute(sql, parameters).fetchall()

    # Key-value state ----------------------------------------------------------------

    def get(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM state WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, values: Mapping[str, str]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", values.items()
            )

    def enrollment(self) -> Enrollment | None:
        values = [self.get(key) for key in ("collector", "ca_cert", "host_id", "credential")]
        if any(value is None for value in values):
            return None
        return Enrollment(*(str(value) for value in values))

    def save_enrollment(self, enrollment: Enrollment, plan_json: str) -> None:
        self.put(
            {
                "collector": enrollment.collector,
                "ca_cert": enrollment.ca_cert,
                "host_id": enrollment.host_id,
                "credential": enrollment.credential,
                "plan": plan_json,
            }
        )

    # Batches ------------------------------------------------------------------------

    def spool(
        self, collection: Collection, collected_at_ms: int, plan_version: str
    ) -> tuple[int, int]:
        """Spool a batch of the tables that changed since the last one; returns (seq, changed).

        A batch with no changed table is still spooled: its digests tell the collector the
        host is alive and its facts current, so the host never turns stale by being steady.

        Diffing against what was spooled (not what was acknowledged) is safe because the
        collector applies a host's batches in order, and every batch carries all digests so
        the collector can ask for a full resend if its copy ever disagrees.
        """
        digests = collection.digests()
        with self._transaction() as conn:
            sent = dict(conn.execute("SELECT table_name, digest FROM sent_digests").fetchall())
            changed = {
                name: collection.tables[name]
                for name, digest in digests.items()
                if sent.get(name) != digest
            }
            full = set(changed) == set(digests)
            payload = {
                "changed": {
                    name: {"rows": result.rows, "error": result.error}
                    for name, result in changed.items()
                },
                "digests": digests,
                "plan_version": plan_version,
                "full": full,
            }
            row = conn.execute("SELECT value FROM state WHERE key = 'last_seq'").fetchone()
            seq = int(row[0]) + 1 if row else 1
            conn.execute(
                "INSERT INTO batches (seq, collected_at_ms, payload) VALUES (?, ?, ?)",
                (seq, collected_at_ms, json.dumps(payload, separators=(",", ":"))),
            )
            conn.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('last_seq', ?)", (str(seq),)
            )
            conn.execute("DELETE FROM sent_digests")
            conn.executemany("INSERT INTO sent_digests VALUES (?, ?)", digests.items())
        return seq, len(changed)

    def forget_sent(self, tables: list[str] | None = None) -> None:
        """Make the next batch carry these tables whole (all tables when None)."""
        with self._transaction() as conn:
            if tables is None:
                conn.execute("DELETE FROM sent_digests")
            else:
                conn.executemany(
                    "DELETE FROM sent_digests WHERE table_name = ?", [(t,) for t in tables]
                )

    def pending(self, after_seq: int = 0, limit: int = 64) -> list[SpooledBatch]:
        rows = self._read(
            "SELECT seq, collected_at_ms, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [_batch(seq, collected_at_ms, payload) for seq, collected_at_ms, payload in rows]

    def pending_count(self, after_seq: int = 0) -> int:
        """Batches still spooled (unacknowledged), or only those after ``after_seq``."""
        return int(self._read("SELECT COUNT(*) FROM batches WHERE seq > ?", (after_seq,))[0][0])

    def acknowledge(self, seq: int) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))


def _batch(seq: int, collected_at_ms: int, payload: str) -> SpooledBatch:
    data = json.loads(payload)
    return SpooledBatch(
        seq=seq,
        collected_at_ms=collected_at_ms,
        changed={
            name: TableResult(rows=table["rows"], error=table["error"])
            for name, table in data["changed"].items()
        },
        digests=data["digests"],
        plan_version=data["plan_version"],
        full=data["full"],
    )
