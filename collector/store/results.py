"""Check results: the latest per (host, check), and the history of every change.

``result_transitions`` holds one row per change of a result's status, reason or evidence
(``old_status`` equals ``new_status`` when only the evidence changed), with the digest of
its evidence; the evidence itself is kept once per digest in ``evidence``. The latest row
per (host, check) at or before an instant is the result as of that instant, and its
``status_since`` says since when the status held. ``evaluations`` records when each host
was evaluated. All of it, and the compliance drift events the change raised, are written
in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from collector.drift import DriftEvent
from collector.model import StoredResult
from collector.policy.model import Pack, Status
from collector.store.base import StoreBase, ts
from collector.store.drift import insert_events

__all__ = ["ResultsMixin", "Transition", "evidence_digest"]

#: (check id, old status or None for a first result, new status)
Transition = tuple[str, Status | None, Status]


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
        previous: Iterable[StoredResult] | None = None,
        events: Iterable[DriftEvent] = (),
    ) -> list[Transition]:
        """Upsert the latest results, record every change and ``events``; returns the status
        changes. ``previous`` (the host's results before, if the caller has them) saves a
        read."""
        before = {
            result.check_id: result
            for result in (self.results_for(host_id) if previous is None else previous)
        }
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

    def results_for(self, host_id: int) -> list[StoredResult]:
        rows = self.db["results"].rows_where("host_id = ?", [host_id], order_by="check_id")
        return [_stored_result(row) for row in rows]

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
        self, host_id: int, result: StoredResult, before: StoredResult | None, now: datetime
    ) -> None:
        """Upsert one result, and record its change if any (and its status change)."""
        evidence = json.dumps(result.evidence, sort_keys=True)
        status_changed = before is None or before.status != result.status
        changed = (
            status_changed
            or before is None
            or before.reason != result.reason
            or before.evidence != result.evidence
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
