"""Reading history as of an instant, compacting it, and the register of issued reports.

Every read takes an instant ``at`` and sees only rows stamped at or before it (knowledge
time, see ``collector.store.base``), with one statement per kind of row rather than one per
host, so a fleet report costs a few scans whatever the number of hosts.

Compaction (retention) keeps, for every series, the last row before the boundary and
everything after it: results and fact rows as of any instant after the boundary read the
same before and after compacting. Fact rows before the boundary collapse into ``snapshot``
rows (rows removed before it go); batch records keep each host's latest, with a floor that
still refuses the older seqs as duplicates; delivered drift events before it go.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from collector.drift import State
from collector.policy.model import Status
from collector.store.base import StoreBase, dt, ts

__all__ = ["FactChange", "HistoryMixin", "HostActivity", "IssuedReport", "ResultAt"]

_FLOOR_KEY = "history_floor"


@dataclass(frozen=True)
class ResultAt:
    """A check's result on a host as of an instant: ``since`` its status held, ``changed_at``
    the last change of status, reason or evidence."""

    host_id: int
    check_id: str
    status: Status
    reason: str
    evidence: tuple[dict[str, str], ...]
    evidence_sha256: str
    since: datetime
    changed_at: datetime


@dataclass(frozen=True)
class HostActivity:
    """What the collector had heard from a host as of an instant."""

    last_collected_at: datetime | None
    last_received_at: datetime | None
    evaluated_at: datetime | None


@dataclass(frozen=True)
class FactChange:
    id: int
    host_id: int
    view: str
    seq: int
    collected_at: datetime
    at: datetime
    change: str
    identity: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class IssuedReport:
    sha256: str
    content_sha256: str
    format: str
    generated_at: datetime
    as_of: datetime
    scope: dict[str, Any]
    generated_by: str


#: Host ids passed as one JSON array (both engines read it; the CAST makes PostgreSQL's text
#: elements ids).
_IDS = "(SELECT CAST(value AS INTEGER) FROM json_each({}))"


def _ids_clause(column: str, host_ids: Collection[int] | None) -> tuple[str, list[str]]:
    if host_ids is None:
        return "", []
    return f" AND {column} IN {_IDS.format('?')}", [json.dumps(sorted(host_ids))]


class HistoryMixin(StoreBase):
    def history_floor(self) -> datetime | None:
        """The oldest instant history still describes exactly (None: nothing compacted)."""
        return dt(self.setting(_FLOOR_KEY))

    def results_as_of(self, at: datetime, host_ids: Collection[int] | None) -> list[ResultAt]:
        """Every (host, check) result as of ``at``, by host then check."""
        clause, params = _ids_clause("host_id", host_ids)
        rows = self.conn.execute(
            "SELECT t.host_id, t.check_id, t.new_status, t.reason, t.evidence_sha256,"
            " COALESCE(t.status_since, t.at), t.at, e.rows_json"
            " FROM (SELECT MAX(id) AS id FROM result_transitions"
            f"       WHERE at <= ?{clause} GROUP BY host_id, check_id) AS latest"
            " JOIN result_transitions AS t ON t.id = latest.id"
            " LEFT JOIN evidence AS e ON e.sha256 = t.evidence_sha256"
            " ORDER BY t.host_id, t.check_id",
            [ts(at), *params],
        )
        # A fleet's results share few evidence sets and instants: parse each once.
        parsed: dict[str, tuple[dict[str, str], ...]] = {}
        instants: dict[str, datetime] = {}
        results = []
        for host_id, check_id, status, reason, digest, since, changed, evidence in rows:
            if digest not in parsed:
                parsed[digest] = tuple(json.loads(evidence)) if evidence else ()
            for text in (since, changed):
                if text not in instants:
                    instants[text] = datetime.fromisoformat(text)
            results.append(
                ResultAt(
                    host_id,
                    check_id,
                    Status(status),
                    reason,
                    parsed[digest],
                    digest,
                    instants[since],
                    instants[changed],
                )
            )
        return results

    def host_counts(self, now: datetime, stale_after_intervals: int) -> tuple[int, int]:
        """(hosts enrolled, hosts stale at ``now``): stale when a host never reported, or
        not within ``stale_after_intervals`` of its own collection interval.

        A few aggregate statements (one per distinct interval, usually one), portable to
        both engines, so a metrics scrape stays cheap at 50,000 hosts.
        """
        intervals = self.conn.execute(
            "SELECT interval_seconds, COUNT(*), SUM(CASE WHEN last_collected_at IS NULL"
            " THEN 1 ELSE 0 END) FROM hosts GROUP BY interval_seconds"
        ).fetchall()
        enrolled = stale = 0
        for interval, count, never in intervals:
            enrolled += int(count)
            boundary = ts(now - timedelta(seconds=stale_after_intervals * int(interval)))
            row = self.conn.execute(
                "SELECT COUNT(*) FROM hosts WHERE interval_seconds = ? AND last_collected_at < ?",
                (interval, boundary),
            ).fetchone()
            stale += int(never or 0) + int(row[0])
        return enrolled, stale

    def host_activity_as_of(
        self, at: datetime, host_ids: Collection[int] | None
    ) -> dict[int, HostActivity]:
        """Per host enrolled by ``at``: its latest batch received and evaluation, as of ``at``.

        One statement; each host costs an index seek into ``batches`` and ``evaluations``.
        """
        latest = (
            "(SELECT b.{} FROM batches AS b WHERE b.host_id = h.id AND b.received_at <= :at"
            " ORDER BY b.received_at DESC LIMIT 1)"
        )
        only = "" if host_ids is None else f" AND h.id IN {_IDS.format(':ids')}"
        rows = self.conn.execute(
            f"SELECT h.id, {latest.format('collected_at')}, {latest.format('received_at')},"
            " (SELECT MAX(v.at) FROM evaluations AS v WHERE v.host_id = h.id AND v.at <= :at)"
            f" FROM hosts AS h WHERE h.enrolled_at <= :at{only}",
            {"at": ts(at), "ids": json.dumps(sorted(host_ids or ()))},
        )
        return {
            host_id: HostActivity(dt(collected), dt(received), dt(evaluated))
            for host_id, collected, received, evaluated in rows
        }

    # Fact history -----------------------------------------------------------------------

    def fact_changes(
        self,
        host_id: int,
        view: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FactChange]:
        clauses: list[str] = ["host_id = ?"]
        params: list[object] = [host_id]
        for sql, value in (("view = ?", view), ("at >= ?", since), ("at <= ?", until)):
            if value is not None:
                clauses.append(sql)
                params.append(value if isinstance(value, str) else ts(value))
        rows = self.conn.execute(
            "SELECT id, host_id, view, seq, collected_at, at, change, identity_json, old_json,"
            f" new_json FROM fact_history WHERE {' AND '.join(clauses)} ORDER BY id",
            params,
        )
        return [
            FactChange(i, h, v, s, datetime.fromisoformat(c), datetime.fromisoformat(a), *rest)
            for i, h, v, s, c, a, *rest in rows
        ]

    def view_state_as_of(self, host_id: int, view: str, at: datetime) -> State:
        """A tracked view's rows on a host as of ``at``, rebuilt from its history."""
        rows = self.conn.execute(
            "SELECT identity_json, new_json FROM fact_history WHERE id IN"
            " (SELECT MAX(id) FROM fact_history WHERE host_id = ? AND view = ? AND at <= ?"
            "  GROUP BY identity_json) AND change != 'removed'",
            (host_id, view, ts(at)),
        )
        return dict(rows.fetchall())

    # Compaction -------------------------------------------------------------------------

    def compact_history(self, before: datetime, host_ids: Collection[int]) -> int:
        """Compact history older than ``before`` for ``host_ids`` (one transaction per host,
        so ingest is never held up for long); returns the rows deleted."""
        deleted = 0
        for host_id in host_ids:
            with self._transaction() as conn:
                deleted += _compact_host(conn, host_id, ts(before))
        with self._transaction() as conn:
            deleted += conn.execute(
                "DELETE FROM evidence WHERE sha256 NOT IN"
                " (SELECT evidence_sha256 FROM result_transitions)"
            ).rowcount
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key)"
                " DO UPDATE SET value = MAX(value, ?2)",
                (_FLOOR_KEY, ts(before)),
            )
        return deleted

    # Issued reports ---------------------------------------------------------------------

    def record_issued_report(self, report: IssuedReport) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO issued_reports (sha256, content_sha256, format, generated_at, as_of,"
                " scope_json, generated_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    report.sha256,
                    report.content_sha256,
                    report.format,
                    ts(report.generated_at),
                    ts(report.as_of),
                    json.dumps(report.scope, sort_keys=True),
                    report.generated_by,
                ),
            )

    def issued_reports(self, sha256: str) -> list[IssuedReport]:
        rows = self.conn.execute(
            "SELECT sha256, content_sha256, format, generated_at, as_of, scope_json,"
            " generated_by FROM issued_reports WHERE sha256 = ? ORDER BY id",
            (sha256,),
        )
        return [
            IssuedReport(
                d, c, f, datetime.fromisoformat(g), datetime.fromisoformat(a), json.loads(s), b
            )
            for d, c, f, g, a, s, b in rows
        ]


#: Per host, the statements of one compaction: each keeps the last row before the boundary
#: of every series (``?1`` host id, ``?2`` boundary).
_COMPACT = (
    "DELETE FROM result_transitions WHERE host_id = ?1 AND at < ?2 AND id NOT IN"
    " (SELECT MAX(id) FROM result_transitions WHERE host_id = ?1 AND at < ?2 GROUP BY check_id)",
    "DELETE FROM fact_history WHERE host_id = ?1 AND at < ?2 AND id NOT IN"
    " (SELECT MAX(id) FROM fact_history WHERE host_id = ?1 AND at < ?2"
    "  GROUP BY view, identity_json)",
    "DELETE FROM fact_history WHERE host_id = ?1 AND at < ?2 AND change = 'removed'",
    "UPDATE fact_history SET change = 'snapshot', old_json = NULL"
    " WHERE host_id = ?1 AND at < ?2 AND change != 'snapshot'",
    "DELETE FROM evaluations WHERE host_id = ?1 AND at < ?2"
    " AND at != (SELECT MAX(at) FROM evaluations WHERE host_id = ?1 AND at < ?2)",
    "DELETE FROM drift_events WHERE host_id = ?1 AND at < ?2 AND id NOT IN"
    " (SELECT event_id FROM outbox WHERE delivered_at IS NULL)",
    "DELETE FROM fact_changes WHERE host_id = ?1 AND collected_at < ?2",
)


def _compact_host(conn: sqlite3.Connection, host_id: int, before: str) -> int:
    deleted = sum(conn.execute(sql, (host_id, before)).rowcount for sql in _COMPACT)
    kept = conn.execute(
        "SELECT seq FROM batches WHERE host_id = ? AND received_at < ?"
        " ORDER BY received_at DESC LIMIT 1",
        (host_id, before),
    ).fetchone()
    if kept is None:
        return deleted
    floor = conn.execute(
        "SELECT MAX(seq) FROM batches WHERE host_id = ? AND received_at < ? AND seq != ?",
        (host_id, before, kept[0]),
    ).fetchone()[0]
    if floor is not None:
        conn.execute(
            "INSERT INTO batch_floors (host_id, seq) VALUES (?1, ?2) ON CONFLICT (host_id)"
            " DO UPDATE SET seq = MAX(seq, ?2)",
            (host_id, floor),
        )
        deleted += conn.execute(
            "DELETE FROM batches WHERE host_id = ? AND received_at < ? AND seq != ?",
            (host_id, before, kept[0]),
        ).rowcount
    return deleted
