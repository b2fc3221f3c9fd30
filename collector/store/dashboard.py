"""Lean reads for the dashboard: statuses without evidence, status history, newest drift.

The dashboard's fleet pages summarise every (host, check) pair, so they read only the three
columns a score needs (no evidence JSON to parse) in one statement, and draw the trend from
status transitions alone. A cheap fingerprint tells whether anything a summary depends on
changed since it was built. Portable SQL (SQLite and PostgreSQL); no new tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import datetime

from collector.drift import EventKind, StoredEvent
from collector.store.base import StoreBase, ts
from collector.store.drift import _EVENT_COLUMNS, _stored_event

__all__ = ["DashboardMixin", "StatusRow"]

#: (host id, check id, status value)
StatusRow = tuple[int, str, str]


class DashboardMixin(StoreBase):
    def result_statuses(self) -> Iterator[StatusRow]:
        """Every host's latest status per check, streamed (millions of rows at 50,000
        hosts: the caller counts them as they come instead of holding them)."""
        cursor = self.conn.execute("SELECT host_id, check_id, status FROM results")
        while batch := cursor.fetchmany(10_000):
            yield from batch

    def statuses_as_of(self, at: datetime) -> list[StatusRow]:
        """Every (host, check) status as of ``at`` (knowledge time), from transitions."""
        rows = self.conn.execute(
            "SELECT t.host_id, t.check_id, t.new_status FROM result_transitions AS t"
            " JOIN (SELECT MAX(id) AS id FROM result_transitions WHERE at <= ?"
            "       GROUP BY host_id, check_id) AS latest ON t.id = latest.id",
            (ts(at),),
        )
        return [(int(h), str(c), str(s)) for h, c, s in rows]

    def status_changes(self, after: datetime, until: datetime) -> list[tuple[str, int, str, str]]:
        """Status transitions stamped in (``after``, ``until``], oldest first, as
        (at, host id, check id, new status); ``at`` keeps its stored (sortable) spelling."""
        rows = self.conn.execute(
            "SELECT at, host_id, check_id, new_status FROM result_transitions"
            " WHERE at > ? AND at <= ? ORDER BY at, id",
            (ts(after), ts(until)),
        )
        return [(str(a), int(h), str(c), str(s)) for a, h, c, s in rows]

    def first_result_at(self) -> datetime | None:
        row = self.conn.execute("SELECT MIN(at) FROM result_transitions").fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def newest_drift(
        self,
        limit: int,
        before_id: int | None = None,
        kind: EventKind | None = None,
        host_ids: Collection[int] | None = None,
    ) -> list[StoredEvent]:
        """Up to ``limit`` drift events, newest first, older than event ``before_id``."""
        clauses, params = ["1 = 1"], list[object]()
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind.value)
        if host_ids is not None:
            ids = sorted(host_ids) or [-1]
            clauses.append(f"host_id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM drift_events WHERE {' AND '.join(clauses)}"
            " ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [_stored_event(row) for row in rows]

    def dashboard_fingerprint(self) -> tuple[object, ...]:
        """Changes whenever a result, host, report time, waiver, group rule or enroll secret
        changes: a summary built under the same fingerprint is still right (bar the clock)."""
        queries = (
            "SELECT MAX(id) FROM result_transitions",
            "SELECT COUNT(*), MAX(id), MAX(last_collected_at) FROM hosts",
            "SELECT COUNT(*), MAX(approved_at), MAX(revoked_at) FROM waivers",
            "SELECT COUNT(*), MAX(deleted_at) FROM group_rules",
            "SELECT COUNT(*), MAX(revoked_at) FROM enroll_secrets",
        )
        return tuple(tuple(self.conn.execute(sql).fetchone()) for sql in queries)
