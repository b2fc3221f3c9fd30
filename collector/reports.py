"""Compliance reports: one model, rendered as a text table, JSON or CSV.

The report states what an auditor needs to trust it: host identity, policy pack versions
and SHA-256, collection and evaluation times, and its own SHA-256 over the canonical JSON
of everything else, so a filed copy can be checked for tampering.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from collector.policy.model import Check, Pack, Status
from collector.scoring import FleetScore, HostScore
from collector.service import HostView

__all__ = ["FORMATS", "Report", "build_report", "render"]

FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class Report:
    generated_at: str
    packs: list[dict[str, str]]
    fleet: dict[str, Any]
    hosts: list[dict[str, Any]]
    sha256: str = ""


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _score(score: HostScore | FleetScore) -> dict[str, Any]:
    return asdict(score)


def _host(view: HostView, checks: dict[str, Check]) -> dict[str, Any]:
    host = view.host
    return {
        "id": host.id,
        "hostname": host.identity.hostname,
        "hardware_uuid": host.identity.hardware_uuid,
        "hardware_serial": host.identity.hardware_serial,
        "platform": host.identity.platform,
        "os_version": host.identity.os_version,
        "last_collected_at": _iso(host.last_collected_at),
        "stale": view.stale,
        "score": _score(view.score),
        "results": [
            {
                "check_id": result.check_id,
                "title": checks[result.check_id].title,
                "severity": checks[result.check_id].severity.value,
                "pack": checks[result.check_id].pack,
                "status": result.status.value,
                "reason": result.reason,
                "evaluated_at": _iso(result.evaluated_at),
                "evidence": list(result.evidence),
            }
            for result in view.results
        ],
    }


def build_report(
    views: Sequence[HostView],
    fleet: FleetScore,
    packs: Sequence[Pack],
    checks: dict[str, Check],
    now: datetime,
) -> Report:
    report = Report(
        generated_at=_iso(now),
        packs=[{"name": p.name, "version": p.version, "sha256": p.sha256} for p in packs],
        fleet=_score(fleet),
        hosts=[_host(view, checks) for view in views],
    )
    body = json.dumps(asdict(report), sort_keys=True, separators=(",", ":"))
    return Report(**{**asdict(report), "sha256": hashlib.sha256(body.encode()).hexdigest()})


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def render_table(report: Report) -> str:
    lines = [f"Posture compliance report, generated {report.generated_at}"]
    lines += [f"  pack {p['name']} {p['version']} sha256 {p['sha256']}" for p in report.packs]
    lines.append(
        f"Fleet score {_percent(report.fleet['percent'])} over {report.fleet['hosts']} host(s)"
    )
    for host in report.hosts:
        score = host["score"]
        stale = " STALE" if host["stale"] else ""
        lines.append("")
        lines.append(
            f"Host {host['id']} {host['hostname']} ({host['os_version']}){stale}:"
            f" score {_percent(score['percent'])}, pass {score['passed']}, fail {score['failed']},"
            f" error {score['errors']}, n/a {score['notapplicable']}, unknown {score['unknown']}"
        )
        for result in host["results"]:
            if result["status"] != Status.PASS.value:
                reason = f" ({result['reason']})" if result["reason"] else ""
                lines.append(
                    f"  {result['status'].upper():<13} {result['severity']:<8}"
                    f" {result['check_id']}: {result['title']}{reason}"
                )
    lines += ["", f"report sha256 {report.sha256}"]
    return "\n".join(lines) + "\n"


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "host_id",
            "hostname",
            "hardware_uuid",
            "check_id",
            "title",
            "severity",
            "pack",
            "status",
            "reason",
            "evaluated_at",
            "last_collected_at",
            "report_generated_at",
        ]
    )
    for host in report.hosts:
        for r in host["results"]:
            writer.writerow(
                [
                    host["id"],
                    host["hostname"],
                    host["hardware_uuid"],
                    r["check_id"],
                    r["title"],
                    r["severity"],
                    r["pack"],
                    r["status"],
                    r["reason"],
                    r["evaluated_at"],
                    host["last_collected_at"],
                    report.generated_at,
                ]
            )
    return out.getvalue()


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(asdict(report), indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return render_csv(report)
    if fmt == "table":
        return render_table(report)
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
