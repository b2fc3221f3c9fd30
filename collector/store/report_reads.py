"""The reads a streamed report makes: hosts a page at a time, their results, evidence.

A fleet report over 50,000 hosts cannot hold the fleet in memory, so it reads history as
of an instant one page of hosts at a time, inside one read transaction (the caller's
``read_snapshot``): a page of hosts with their enrollment group and activity, then the
latest result transition of every check on those hosts, then the evidence texts it will
print, each read once per digest. Values come back as stored (instants as their UTC
text), so a report can pass them through instead of parsing and re-printing them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime

from collector.store.base import StoreBase, ts

__all__ = ["HostRow", "ReportReadsMixin", "ResultRow"]

#: (id, hardware_uuid, hardware_serial, hostname, platform, os_version, agent_version,
#: enrolled_at, interval_seconds, enroll secret's group or None, facts collected at,
#: last batch received at, last evaluated at): instants as stored text or None.
HostRow = tuple[
    int, str, str, str, str, str, str, str, int, str | None, str | None, str | None, str | None
]
#: (host_id, check_id, status, reason, evidence_sha256, status since, changed at)
ResultRow = tuple[int, str, str, str, str, str, str]

#: A list of ids passed as one JSON array (both engines read it; the CAST makes
#: PostgreSQL's text elements integers, or the digests' text stay text).
_IDS = "(SELECT CAST(value AS INTEGER) FROM json_each(?))"
_TEXTS = "(SELECT CAST(value AS TEXT) FROM json_each(?))"

_LATEST = (
    "(SELECT b.{} FROM batches AS b WHERE b.host_id = h.id AND b.received_at <= ?"
    " ORDER BY b.received_at DESC LIMIT 1)"
)


class ReportReadsMixin(StoreBase):
    def report_host_page(
        self,
        at: datetime,
        after_id: int,
        limit: int,
        host_ids: Collection[int] | None = None,
        upto_id: int | None = None,
    ) -> list[HostRow]:
        """Up to ``limit`` hosts enrolled by ``at`` with an id above ``after_id`` (and at
        most ``upto_id``), by id, each with its latest batch and evaluation as of ``at``
        (index seeks per host)."""
        stamp = ts(at)
        only, params = "", [stamp, stamp, stamp, stamp, after_id]
        if upto_id is not None:
            only = " AND h.id <= ?"
            params.append(upto_id)
        if host_ids is not None:
            only += f" AND h.id IN {_IDS}"
            params.append(json.dumps(sorted(host_ids)))
        rows = self.conn.execute(
            "SELECT h.id, h.hardware_uuid, h.hardware_serial, h.hostname, h.platform,"
            " h.os_version, h.agent_version, h.enrolled_at, h.interval_seconds, s.group_name,"
            f" {_LATEST.format('collected_at')}, {_LATEST.format('received_at')},"
            " (SELECT MAX(v.at) FROM evaluations AS v WHERE v.host_id = h.id AND v.at <= ?)"
            " FROM hosts AS h LEFT JOIN enroll_secrets AS s ON s.id = h.enroll_secret_id"
            f" WHERE h.enrolled_at <= ? AND h.id > ?{only} ORDER BY h.id LIMIT {int(limit)}",
            params,
        )
        return rows.fetchall()

    def report_host_ids(self, at: datetime) -> list[int]:
        """The ids of every host enrolled by ``at``, in order (to split a report by id)."""
        rows = self.conn.execute(
            "SELECT id FROM hosts WHERE enrolled_at <= ? ORDER BY id", (ts(at),)
        )
        return [row[0] for row in rows]

    def report_results(self, at: datetime, host_ids: Sequence[int]) -> list[ResultRow]:
        """The latest transition as of ``at`` of every (host, check) on ``host_ids``, in no
        particular order (sorting a page in Python is cheaper than in SQL, and the same on
        both engines)."""
        if not host_ids:
            return []
        rows = self.conn.execute(
            "SELECT t.host_id, t.check_id, t.new_status, t.reason, t.evidence_sha256,"
            " COALESCE(t.status_since, t.at), t.at"
            " FROM (SELECT MAX(id) AS id FROM result_transitions"
            f"       WHERE host_id IN {_IDS} AND at <= ? GROUP BY host_id, check_id) AS latest"
            " JOIN result_transitions AS t ON t.id = latest.id",
            (json.dumps(list(host_ids)), ts(at)),
        )
        return rows.fetchall()

    def evidence_texts(self, digests: Collection[str]) -> dict[str, str]:
        """Evidence JSON text by digest, as stored."""
        if not digests:
            return {}
        rows = self.conn.execute(
            f"SELECT sha256, rows_json FROM evidence WHERE sha256 IN {_TEXTS}",
            (json.dumps(sorted(digests)),),
        )
        return {digest: text for digest, text in rows}
