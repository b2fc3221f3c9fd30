"""What every part of the SQLite store shares: the connection, transactions and time stamps.

``SqliteStore`` is assembled from one mixin per noun (hosts, facts, results, drift, groups,
waivers, history), each in its own module, all on this base: one class per engine, methods
grouped the way Fleet's datastore splits its files.

**Stamps and the report seal.** History is kept in *knowledge time*: each row records when
the collector committed it, and a report as of T reads exactly the rows stamped at or
before T. A report without ``--as-of`` must therefore see every row stamped before its
instant. ``seal`` takes that instant while holding the write lock (so no writer is half way
through a transaction) and records it; every later write is stamped after it (``_stamp``),
even if its caller read the clock before the report sealed. Producing the same report again
as of that instant later reads the same rows, byte for byte.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

__all__ = ["StoreBase", "dt", "ts"]

_SEAL_KEY = "sealed_until"
_TICK = timedelta(microseconds=1)


def ts(value: datetime) -> str:
    """The stored spelling of an instant: UTC, microseconds, so text order is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class StoreBase:
    """The connection and transaction helpers the mixins build on.

    ``conn`` is a sqlite3 connection in autocommit mode on SQLite, and on PostgreSQL an
    adapter offering the same surface (``collector.store.postgres.PgConnection``): store
    code uses ``execute``/``executemany`` with ``?`` placeholders, cursors' ``fetchone``,
    ``fetchall``, iteration, ``rowcount``, ``lastrowid`` and ``description``, and SQL both
    engines speak (``collector.store.dialect`` lists what is translated and what is not).
    ``db`` is sqlite-utils' ``Database`` on SQLite; on PostgreSQL only its ``execute``,
    ``executescript`` and ``db[table].rows_where``/``count`` exist.
    """

    conn: sqlite3.Connection
    db: Database

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A write transaction. ``BEGIN EXCLUSIVE`` (the seal) also waits for every other
        write in flight: the same as IMMEDIATE on SQLite, where writers take turns anyway;
        on PostgreSQL, where they run side by side, the difference (see
        ``collector.store.postgres``)."""
        self.conn.execute(begin)
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    @staticmethod
    def _stamp(conn: sqlite3.Connection, now: datetime) -> datetime:
        """``now``, or just after the last report seal if that is later (inside a write
        transaction; see the module docstring)."""
        row = conn.execute("SELECT value FROM settings WHERE key = ?", (_SEAL_KEY,)).fetchone()
        sealed = dt(row[0]) if row else None
        return sealed + _TICK if sealed is not None and sealed >= now else now

    def seal(self, now: datetime) -> datetime:
        """Fix a report's instant: nothing written later is stamped at or before it."""
        with self._transaction("BEGIN EXCLUSIVE") as conn:
            instant = self._stamp(conn, now)
            conn.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                (_SEAL_KEY, ts(instant)),
            )
        return instant

    def setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None
