"""Check results: the latest per (host, check), and the history of every change.

``result_transitions`` holds one row per change of a result's status, reason or evidence
(``old_status`` equals ``new_status`` when only the evidence changed), with the digest of
its evidence; the evidence itself is kept once per digest in ``evidence``. The latest row
per (host, check) at or before an instant is the result as of that instant, and its
``status_since`` says since when the status held. ``evaluations`` records when each host
was evaluated. All of it, and the compliance drift events the change raised, are written
in one transaction.

Re-evaluating after a delta touches a few checks, so reads are per check: ``results_for``
takes the check ids wanted, ``prior_results`` gives what ``save_results`` compares with
(evidence left encoded: the new evidence is compared as text first, and decoded only when
the text differs), and ``host_statuses`` gives every status without any evidence (what a
score needs).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.drift import DriftEvent
from collector.model import StoredResult
from collector.policy.model import Pack, Status
from collector.store.base import StoreBase, ts
from collector.store.drift import insert_events

__all__ = ["PriorResult", "ResultsMixin", "Transition", "evidence_digest"]

#: (check id, old status or None for a first result, new status)
Transition = tuple[str, Status | None, Status]

#: Check ids per ``IN (...)`` list: far below SQLite's oldest variable limit (999).
_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class PriorResult:
    """A stored result as a new one is compared with it, its evidence still encoded: most
    re-evaluated checks keep their evidence, and comparing text costs far less than
    decoding it."""

    check_id: str
    status: Status
    reason: str
    evidence_json: str
    changed_at: datetime

    def same_evidence(self, encoded: str, evidence: object) -> bool:
        """Whether ``evidence`` (``encoded`` as ``save_results`` stores it) is this
        result's: equal text is; different text is compared decoded (rows stored with
        another spelling are the same evidence when their values are)."""
        return encoded == self.evidence_json or tuple(json.loads(self.evidence_json)) == evidence


def evidence_digest(evidence_json: str) -> str:
    return hashlib.sha256(evidence_json.encode()).hexdigest()


class ResultsMixin(StoreBase):
    notify_events: bool

    def save_results(
        self,
        host_id: int,
        results: Sequence[StoredResult],
        now: datetime,
        *,
        previous: Iterable[StoredResult | PriorResult] | None = None,
        events: Iterable[DriftEvent] = (),
    ) -> list[Transition]:
        """Upsert the latest results, record every change and ``events``; returns the status
        changes. ``previous`` (the results before of at least these checks, if the caller
        has them) saves a read."""
        if previous is None:
            previous = self.prior_results(host_id, [r.check_id for r in results]).values()
        before = {result.check_id: result for result in previous}
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            rows = _Rows()
            for result in results:
                rows.add(host_id, result, before.get(result.check_id), now)
            rows.write(conn)
            conn.execute(
                "INSERT OR IGNORE INTO evaluations (host_id, at) VALUES (?, ?)", (host_id, ts(now))
            )
            insert_events(conn, host_id, now, events, self.notify_events)
        return rows.transitions

    def results_for(
        self, host_id: int, check_ids: Collection[str] | None = None
    ) -> list[StoredResult]:
        """The host's latest results by check id: all, or those of ``check_ids``."""
        columns = "host_id, check_id, status, reason, evidence_json, evaluated_at, changed_at"
        rows = self._result_rows(host_id, check_ids, columns)
        return [_stored_result(dict(zip(columns.split(", "), row, strict=True))) for row in rows]

    def prior_results(self, host_id: int, check_ids: Collection[str]) -> dict[str, PriorResult]:
        """What ``save_results`` compares new results of ``check_ids`` with, by check id."""
        columns = "check_id, status, reason, evidence_json, changed_at"
        return {
            check_id: PriorResult(
                check_id, Status(status), reason, evidence, datetime.fromisoformat(changed)
            )
            for check_id, status, reason, evidence, changed in self._result_rows(
                host_id, check_ids, columns
            )
        }

    def host_statuses(self, host_id: int) -> dict[str, Status]:
        """Every latest status of the host by check id, without evidence (for its score)."""
        return {
            check_id: Status(status)
            for check_id, status in self._result_rows(host_id, None, "check_id, status")
        }

    def _result_rows(
        self, host_id: int, check_ids: Collection[str] | None, columns: str
    ) -> list[tuple[Any, ...]]:
        """``columns`` of the host's results in check id order: all, or those of
        ``check_ids`` (a portable ``IN`` list per ``_IDS_PER_QUERY`` ids; sorted ids keep
        the chunks' concatenation in order)."""
        select = f"SELECT {columns} FROM results WHERE host_id = ?"
        if check_ids is None:
            return list(self.conn.execute(f"{select} ORDER BY check_id", (host_id,)))
        ids = sorted(set(check_ids))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            sql = f"{select} AND check_id IN ({marks}) ORDER BY check_id"
            rows.extend(self.conn.execute(sql, (host_id, *chunk)))
        return rows

    def all_results(self) -> list[StoredResult]:
        rows = self.db["results"].rows_where(order_by="host_id, check_id")
        return [_stored_result(row) for row in rows]

    def transitions_for(self, host_id: int) -> list[dict[str, Any]]:
        return list(
            self.db["result_transitions"].rows_where("host_id = ?", [host_id], order_by="id")
        )

    # Policy packs -----------------------------------------------------------------------

    def record_packs(self, packs: Sequence[Pack], now: datetime) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO policy_packs (name, version, sha256, first_loaded_at)"
                " VALUES (?, ?, ?, ?)",
                [(pack.name, pack.version, pack.sha256, ts(now)) for pack in packs],
            )


class _Rows:
    """The rows one ``save_results`` writes, gathered first and written with one statement
    per table (on PostgreSQL, one round trip each rather than three per check)."""

    def __init__(self) -> None:
        self.latest: list[tuple[object, ...]] = []
        self.evidence: dict[str, str] = {}
        self.changes: list[tuple[object, ...]] = []
        self.transitions: list[Transition] = []

    def add(
        self,
        host_id: int,
        result: StoredResult,
        before: StoredResult | PriorResult | None,
        now: datetime,
    ) -> None:
        """Upsert one result, and record its change if any (and its status change)."""
        evidence = json.dumps(result.evidence, sort_keys=True)
        status_changed = before is None or before.status != result.status
        changed = (
            status_changed
            or before is None
            or before.reason != result.reason
            or not _same_evidence(before, evidence, result.evidence)
        )
        since = now if status_changed or before is None else before.changed_at
        self.latest.append(
            (host_id, result.check_id, result.status.value, result.reason, evidence, ts(now),
             ts(since))
        )  # fmt: skip
        if not changed:
            return
        digest = evidence_digest(evidence)
        self.evidence[digest] = evidence
        old = before.status if before else None
        self.changes.append(
            (host_id, result.check_id, old.value if old else None, result.status.value, ts(now),
             result.reason, digest, ts(since))
        )  # fmt: skip
        if status_changed:
            self.transitions.append((result.check_id, old, result.status))

    def write(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO results (host_id, check_id, status, reason,"
            " evidence_json, evaluated_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            self.latest,
        )
        conn.executemany(
            "INSERT OR IGNORE INTO evidence (sha256, rows_json) VALUES (?, ?)",
            sorted(self.evidence.items()),
        )
        conn.executemany(
            "INSERT INTO result_transitions (host_id, check_id, old_status, new_status, at,"
            " reason, evidence_sha256, status_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            self.changes,
        )


def _same_evidence(before: StoredResult | PriorResult, encoded: str, evidence: object) -> bool:
    if isinstance(before, PriorResult):
        return before.same_evidence(encoded, evidence)
    return before.evidence == evidence


def _stored_result(row: Mapping[str, Any]) -> StoredResult:
    return StoredResult(
        host_id=row["host_id"],
        check_id=row["check_id"],
        status=Status(row["status"]),
        reason=row["reason"],
        evidence=tuple(json.loads(row["evidence_json"])),
        evaluated_at=datetime.fromisoformat(row["evaluated_at"]),
        changed_at=datetime.fromisoformat(row["changed_at"]),
    )
