"""The report document: one canonical JSON structure every format renders.

The document follows the versioned schema ``posture.report/1`` (``docs/report-schema.md``).
``content_sha256`` is the SHA-256 of the canonical JSON of everything but the generation
time and itself: two reports of the same scope as of the same instant carry the same
content digest whenever they were produced, so an auditor can tell at a glance that a
report reproduced later says exactly what the filed one said. Each rendered file also has
its own SHA-256 (printed, written beside it, and registered in the collector's database).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import metadata
from typing import Any

from collector.history import HostAsOf, ResultAsOf, Snapshot
from collector.policy.model import FRAMEWORKS, Check, FrameworkRef, Pack, Status
from collector.scoring import FleetScore, HostScore
from collector.waivers import Waiver

__all__ = ["SCHEMA", "Report", "build_report", "collector_version", "iso"]

SCHEMA = "posture.report/1"


@dataclass(frozen=True)
class Report:
    """A built report: ``document`` is JSON-ready and includes ``generated_at`` and
    ``content_sha256``."""

    document: dict[str, Any]

    @property
    def content_sha256(self) -> str:
        return str(self.document["content_sha256"])

    @property
    def generated_at(self) -> str:
        return str(self.document["generated_at"])


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


def _percent(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _host_score(score: HostScore) -> dict[str, Any]:
    return {
        "raw_percent": _percent(score.percent),
        "adjusted_percent": _percent(score.adjusted_percent),
        "coverage": _share(score.coverage),
        "passed": score.passed,
        "failed": score.failed,
        "errors": score.errors,
        "notapplicable": score.notapplicable,
        "unknown": score.unknown,
        "waived": score.waived,
    }


def _fleet_score(score: FleetScore) -> dict[str, Any]:
    judged = score.passed + score.failed
    applicable = judged + score.errors + score.unknown
    return {
        "raw_percent": _percent(score.percent),
        "adjusted_percent": _percent(score.adjusted_percent),
        "coverage": _share(judged / applicable) if applicable else None,
        "hosts": score.hosts,
        "passed": score.passed,
        "failed": score.failed,
        "errors": score.errors,
        "notapplicable": score.notapplicable,
        "unknown": score.unknown,
        "waived": score.waived,
        "share_without_severe_failures": _share(score.share_without_severe_failures),
        "distribution": dict(score.distribution),
        "unscored": score.unscored,
    }


def _refs(refs: Sequence[FrameworkRef]) -> list[dict[str, str]]:
    return [{"control": ref.control, "document": ref.document} for ref in refs]


def _check(check: Check, packs: Mapping[str, Pack]) -> dict[str, Any]:
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


def _waiver(waiver: Waiver, at: datetime) -> dict[str, Any]:
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


def _in_scope(waiver: Waiver, snapshot: Snapshot, checks: Mapping[str, Check]) -> bool:
    if waiver.check_id not in checks:
        return False
    return any(waiver.covers(h.host.id, h.groups, waiver.check_id) for h in snapshot.hosts) or (
        snapshot.scope.host_ids is None and snapshot.scope.group is None
    )


def _waiver_note(result: ResultAsOf) -> str:
    if result.waived and result.waiver is not None:
        waiver = result.waiver
        return (
            f"waived by waiver {waiver.id} ({waiver.scope_label}), approved by"
            f" {waiver.approved_by}, expires {iso(waiver.expires_at)}"
        )
    if result.lapsed_waiver is not None and result.status in (Status.FAIL, Status.ERROR):
        lapsed = result.lapsed_waiver
        return f"waiver {lapsed.id} expired {iso(lapsed.expires_at)}; the result counts again"
    return ""


def _result(result: ResultAsOf) -> dict[str, Any]:
    raw = result.raw
    return {
        "check_id": raw.check_id,
        "status": result.status.value,
        "raw_status": raw.status.value,
        "reason": result.reason,
        "since": iso(raw.since),
        "changed_at": iso(raw.changed_at),
        "evidence_sha256": raw.evidence_sha256,
        "evidence": raw.evidence,
        "waived": result.waived,
        "waiver_id": result.waiver.id if result.waiver else None,
        "waiver_note": _waiver_note(result),
    }


def _host(view: HostAsOf) -> dict[str, Any]:
    host, identity = view.host, view.host.identity
    return {
        "id": host.id,
        "hostname": identity.hostname,
        "hardware_uuid": identity.hardware_uuid,
        "hardware_serial": identity.hardware_serial,
        "platform": identity.platform,
        "os_version": identity.os_version,
        "agent_version": identity.agent_version,
        "enrolled_at": iso(host.enrolled_at),
        "groups": list(view.groups),
        "last_seen_at": iso(view.activity.last_received_at),
        "facts_collected_at": iso(view.activity.last_collected_at),
        "evaluated_at": iso(view.activity.evaluated_at),
        "stale": view.stale,
        "score": _host_score(view.score),
        "results": [_result(result) for result in view.results],
    }


def _control_key(control: str) -> tuple[tuple[int, str], ...]:
    """Natural order for control ids: 5.10 after 5.9, AC-6(2) after AC-6."""
    parts = control.replace("(", ".").replace(")", "").replace("-", ".").split(".")
    return tuple((int(p), "") if p.isdigit() else (0, p) for p in parts)


def _controls(
    snapshot: Snapshot, checks: Mapping[str, Check], framework: str
) -> list[dict[str, Any]]:
    """Per control of ``framework``: the checks evidencing it and their results' counts."""
    controls: dict[tuple[str, str], list[str]] = {}
    for check in checks.values():
        for ref in check.frameworks.get(framework, ()):
            controls.setdefault((ref.control, ref.document), []).append(check.id)
    tallies: dict[str, Counter[str]] = {check_id: Counter() for check_id in checks}
    for host in snapshot.hosts:
        for result in host.results:
            tally = tallies[result.raw.check_id]
            tally[result.status.value] += 1
            tally["waived"] += result.waived
    rows = []
    for (control, document), ids in sorted(controls.items(), key=lambda i: _control_key(i[0][0])):
        total: Counter[str] = Counter()
        for check_id in ids:
            total.update(tallies[check_id])
        counts = {status.value: total[status.value] for status in Status}
        rows.append(
            {"control": control, "document": document, "checks": sorted(ids), **counts,
             "waived": total["waived"]}
        )  # fmt: skip
    return rows


def build_report(
    snapshot: Snapshot,
    packs: Sequence[Pack],
    checks: Mapping[str, Check],
    framework: str | None,
    generated_at: datetime,
    scope: Mapping[str, Any],
) -> Report:
    """The report on ``snapshot``; ``checks`` are the checks in scope, ``scope`` describes
    the filters as the user gave them."""
    pack_by_name = {pack.name: pack for pack in packs}
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "as_of": iso(snapshot.as_of),
        "collector": {"name": "posture-collector", "version": collector_version()},
        "scope": {**scope, "hosts": len(snapshot.hosts), "checks": len(checks)},
        "framework": {"key": framework, "name": FRAMEWORKS[framework]} if framework else None,
        "packs": [
            {"name": p.name, "version": p.version, "sha256": p.sha256}
            for p in sorted(packs, key=lambda p: p.name)
        ],
        "summary": _fleet_score(snapshot.fleet),
        "groups": [
            {"name": name, "score": _fleet_score(score)} for name, score in snapshot.groups.items()
        ],
        "controls": _controls(snapshot, checks, framework) if framework else [],
        "checks": [_check(checks[check_id], pack_by_name) for check_id in sorted(checks)],
        "waivers": [
            _waiver(w, snapshot.as_of) for w in snapshot.waivers if _in_scope(w, snapshot, checks)
        ],
        "hosts": [_host(view) for view in snapshot.hosts],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return Report({**body, "generated_at": iso(generated_at), "content_sha256": digest})
