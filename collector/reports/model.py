"""The report document: one canonical JSON structure every format renders.

The document follows the versioned schema ``posture.report/2`` (``docs/report-schema.json``).
``content_sha256`` is the SHA-256 of the canonical JSON of everything but the generation
time and itself: two reports of the same scope as of the same instant carry the same
content digest whenever they were produced, so an auditor can tell at a glance that a
report reproduced later says exactly what the filed one said. Each rendered file also has
its own SHA-256 (printed, written beside it, and registered in the collector's database).

A report is streamed (``collector.reports.stream``): hosts are rendered one at a time and
never held together, so the document built here is everything *but* the hosts, the part
that depends on all of them (scores, controls, waivers in scope) and is known at the end.

Version 2 differs from version 1 in one meaning: a fleet-wide report (any report not
scoped to one host) carries evidence rows only for results stored as ``fail`` or
``error``; other results carry ``"evidence": null`` and their ``evidence_sha256``. The
top-level ``evidence`` field says which (``"all"`` or ``"failing"``), so an empty list
always means "no rows", never "left out". A per-host report carries all evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import metadata
from typing import Any

from collector.policy.model import Check, FrameworkRef, Pack, Status
from collector.waivers import Waiver

__all__ = [
    "EVIDENCE_NOTICE",
    "SCHEMA",
    "Report",
    "check_document",
    "collector_version",
    "control_rows",
    "iso",
    "waiver_document",
    "waiver_note",
]

SCHEMA = "posture.report/2"

#: What the report says about the evidence it carries, by its ``evidence`` field.
EVIDENCE_NOTICE = {
    "all": "Every result carries the evidence rows that decided it.",
    "failing": (
        "Fleet-wide report: evidence rows are carried for results stored as fail or error"
        " only; other results carry their evidence SHA-256 (a report for one host, --host,"
        " carries every result's evidence)."
    ),
}


@dataclass(frozen=True)
class Report:
    """An issued report: ``document`` is the report without its ``hosts`` (which were
    streamed to the file), including ``generated_at`` and ``content_sha256``."""

    document: dict[str, Any]

    @property
    def content_sha256(self) -> str:
        return str(self.document["content_sha256"])

    @property
    def generated_at(self) -> str:
        return str(self.document["generated_at"])

    @property
    def as_of(self) -> str:
        return str(self.document["as_of"])


def collector_version() -> str:
    try:
        return metadata.version("posture")
    except metadata.PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=65536)
def _isoformat(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def iso(value: datetime | None) -> str | None:
    """An instant as reports spell it (cached: a fleet's results share few instants)."""
    return _isoformat(value) if value else None


def _refs(refs: Sequence[FrameworkRef]) -> list[dict[str, str]]:
    return [{"control": ref.control, "document": ref.document} for ref in refs]


def check_document(check: Check, packs: Mapping[str, Pack]) -> dict[str, Any]:
    return {
        "id": check.id,
        "title": check.title,
        "description": check.description,
        "remediation": check.remediation,
        "severity": check.severity.value,
        "pack": check.pack,
        "pack_version": packs[check.pack].version if check.pack in packs else None,
        "frameworks": {key: _refs(refs) for key, refs in sorted(check.frameworks.items())},
    }


def waiver_document(waiver: Waiver, at: datetime) -> dict[str, Any]:
    """A waiver as it stood at ``at``: an approval or revocation made later is not shown."""
    approved = waiver.approved_at is not None and waiver.approved_at <= at
    revoked = waiver.revoked_at is not None and waiver.revoked_at <= at
    return {
        "id": waiver.id,
        "check_id": waiver.check_id,
        "scope": waiver.scope.value,
        "host_id": waiver.host_id,
        "group": waiver.group,
        "state": waiver.state_at(at).value,
        "justification": waiver.justification,
        "ticket": waiver.ticket,
        "compensating_control": waiver.compensating_control,
        "requested_by": waiver.requested_by,
        "requested_at": iso(waiver.requested_at),
        "approved_by": waiver.approved_by if approved else None,
        "approved_at": iso(waiver.approved_at) if approved else None,
        "expires_at": iso(waiver.expires_at),
        "revoked_by": waiver.revoked_by if revoked else None,
        "revoked_at": iso(waiver.revoked_at) if revoked else None,
        "revoke_reason": waiver.revoke_reason if revoked else "",
    }


def _control_key(control: str) -> tuple[tuple[int, str], ...]:
    """Natural order for control ids: 5.10 after 5.9, AC-6(2) after AC-6."""
    parts = control.replace("(", ".").replace(")", "").replace("-", ".").split(".")
    return tuple((int(p), "") if p.isdigit() else (0, p) for p in parts)


def control_rows(
    checks: Mapping[str, Check], framework: str, tallies: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    """Per control of ``framework``: the checks evidencing it and their results' counts
    (``tallies``: per check, shown status -> count, and ``waived``)."""
    controls: dict[tuple[str, str], list[str]] = {}
    for check in checks.values():
        for ref in check.frameworks.get(framework, ()):
            controls.setdefault((ref.control, ref.document), []).append(check.id)
    rows = []
    for (control, document), ids in sorted(controls.items(), key=lambda i: _control_key(i[0][0])):
        counts = {s.value: sum(tallies[c].get(s.value, 0) for c in ids) for s in Status}
        waived = sum(tallies[c].get("waived", 0) for c in ids)
        rows.append(
            {"control": control, "document": document, "checks": sorted(ids), **counts,
             "waived": waived}
        )  # fmt: skip
    return rows


def waiver_note(status: str, waiver: Waiver | None, lapsed: Waiver | None) -> str:
    """What a report says beside a result about the waiver covering it, or the one that
    ran out."""
    if waiver is not None and status in (Status.FAIL, Status.ERROR):
        return (
            f"waived by waiver {waiver.id} ({waiver.scope_label}), approved by"
            f" {waiver.approved_by}, expires {iso(waiver.expires_at)}"
        )
    if lapsed is not None and status in (Status.FAIL, Status.ERROR):
        return f"waiver {lapsed.id} expired {iso(lapsed.expires_at)}; the result counts again"
    return ""
