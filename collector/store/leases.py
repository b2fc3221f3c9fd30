"""Leases: which collector runs a background job, when several share one database.

A lease is a row ``(name, holder, expires_at)``. Taking it is one upsert that succeeds only
when the lease is free, expired, or already the taker's: the database arbitrates, so two
collectors racing for it cannot both win, on SQLite (one writer at a time) or PostgreSQL
(the row's unique key). Nothing else is needed: no clock but the callers' (collectors of one
cluster must keep their clocks in step, as they already must for history's time stamps),
no extra connection held open the way a session advisory lock would need.

Two uses (``collector.jobs``): a *period* claim (``claim_period``: the first collector to ask
after the previous period ended runs the job, nobody else does until the next one: daily
retention), and a *held* lease renewed by its holder while it works (``hold_lease``: the
webhook outbox, delivered by one collector at a time and taken over when it stops renewing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from collector.store.base import StoreBase, dt, ts

__all__ = ["LEASES_SCHEMA", "Lease", "LeasesMixin"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
LEASES_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        runs INTEGER NOT NULL DEFAULT 0
    )""",
)


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime
    #: How many times it was taken (a holder renewing it does not count).
    runs: int


class LeasesMixin(StoreBase):
    def hold_lease(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """Take or renew lease ``name`` for ``holder`` until ``until``; False when another
        holder has it and it has not expired at ``now``."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at, runs)"
                " VALUES (?1, ?2, ?3, ?4, 1) ON CONFLICT (name) DO UPDATE SET"
                " holder = excluded.holder, expires_at = excluded.expires_at,"
                " acquired_at = CASE WHEN leases.holder = excluded.holder"
                " THEN leases.acquired_at ELSE excluded.acquired_at END,"
                " runs = leases.runs + CASE WHEN leases.holder = excluded.holder THEN 0 ELSE 1 END"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3",
                (name, holder, ts(now), ts(until)),
            )
        return cursor.rowcount == 1

    def claim_period(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """Claim the period from ``now`` to ``until`` for job ``name``: True for exactly one
        caller per period (whoever asks first once the previous period has ended)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at, runs)"
                " VALUES (?1, ?2, ?3, ?4, 1) ON CONFLICT (name) DO UPDATE SET"
                " holder = excluded.holder, acquired_at = excluded.acquired_at,"
                " expires_at = excluded.expires_at, runs = leases.runs + 1"
                " WHERE leases.expires_at <= ?3",
                (name, holder, ts(now), ts(until)),
            )
        return cursor.rowcount == 1

    def release_lease(self, name: str, holder: str, now: datetime) -> bool:
        """End ``holder``'s lease now (a clean stop hands the job over at once)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                (ts(now), name, holder),
            )
        return cursor.rowcount == 1

    def lease(self, name: str) -> Lease | None:
        row = self.conn.execute(
            "SELECT name, holder, acquired_at, expires_at, runs FROM leases WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        acquired, expires = dt(row[2]), dt(row[3])
        assert acquired is not None and expires is not None
        return Lease(row[0], row[1], acquired, expires, int(row[4]))
