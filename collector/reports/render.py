"""Render a report document as text, JSON or CSV, and digest the rendered file.

Every renderer is a pure function of the document, and the document's only part that
depends on when the report was produced is ``generated_at``; so two reports of the same
instant differ only there, in every format.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from collector.policy.model import FRAMEWORKS, Status
from collector.reports.model import Report

__all__ = ["file_sha256", "render_csv", "render_json", "render_table", "sidecar"]

CSV_COLUMNS = (
    "host_id",
    "hostname",
    "hardware_uuid",
    "check_id",
    "policy",
    "status",
    "raw_status",
    "waived",
    "waiver_id",
    "severity",
    "pack",
    "pack_version",
    *FRAMEWORKS,
    "reason",
    "result_since",
    "facts_collected_at",
    "evaluated_at",
    "hardware_serial",
    "groups",
    "agent_version",
    "evidence_sha256",
    "evidence",
    "report_as_of",
    "report_content_sha256",
    "report_generated_at",
)


def render_json(report: Report) -> str:
    """Compact JSON with sorted keys (``jq .`` pretty-prints it): the C encoder, which
    indenting would bypass, keeps a fleet report's JSON several times faster."""
    return json.dumps(report.document, sort_keys=True, ensure_ascii=False) + "\n"


def _check_columns(check: dict[str, Any]) -> list[str]:
    """The CSV columns that depend on the check alone, from ``policy`` to the frameworks."""
    refs = [
        " ".join(ref["control"] for ref in check["frameworks"].get(framework, []))
        for framework in FRAMEWORKS
    ]
    return [check["title"], check["severity"], check["pack"], check["pack_version"] or "", *refs]


def render_csv(report: Report) -> str:
    """One row per (host, check), with the policy's name and every framework's ids."""
    doc = report.document
    per_check = {check["id"]: _check_columns(check) for check in doc["checks"]}
    evidence: dict[str, str] = {}
    report_columns = [doc["as_of"], doc["content_sha256"], doc["generated_at"]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for host in doc["hosts"]:
        host_columns = [
            host["facts_collected_at"] or "",
            host["evaluated_at"] or "",
            host["hardware_serial"],
            " ".join(host["groups"]),
            host["agent_version"],
        ]
        for result in host["results"]:
            title, severity, pack, pack_version, *refs = per_check[result["check_id"]]
            digest = result["evidence_sha256"]
            if digest not in evidence:
                evidence[digest] = json.dumps(
                    result["evidence"], sort_keys=True, ensure_ascii=False
                )
            writer.writerow(
                [
                    host["id"],
                    host["hostname"],
                    host["hardware_uuid"],
                    result["check_id"],
                    title,
                    result["status"],
                    result["raw_status"],
                    "yes" if result["waived"] else "no",
                    result["waiver_id"] or "",
                    severity,
                    pack,
                    pack_version,
                    *refs,
                    result["reason"] or result["waiver_note"],
                    result["since"],
                    *host_columns,
                    digest,
                    evidence[digest],
                    *report_columns,
                ]
            )
    return out.getvalue()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _score_line(score: dict[str, Any]) -> str:
    coverage = "n/a" if score["coverage"] is None else f"{100 * score['coverage']:.0f}%"
    return (
        f"score {_percent(score['raw_percent'])} raw, {_percent(score['adjusted_percent'])}"
        f" with waivers, coverage {coverage}; pass {score['passed']}, fail {score['failed']},"
        f" error {score['errors']}, n/a {score['notapplicable']}, unknown {score['unknown']},"
        f" waived {score['waived']}"
    )


def render_table(report: Report) -> str:
    doc = report.document
    checks = {check["id"]: check for check in doc["checks"]}
    scope = ", ".join(f"{k} {v}" for k, v in sorted(doc["scope"].items()) if v is not None)
    lines = [
        f"Posture compliance report as of {doc['as_of']}",
        f"  generated {doc['generated_at']} by posture-collector {doc['collector']['version']}",
        f"  scope: {scope}",
    ]
    lines += [f"  pack {p['name']} {p['version']} sha256 {p['sha256']}" for p in doc["packs"]]
    lines.append(f"Summary over {doc['summary']['hosts']} host(s): {_score_line(doc['summary'])}")
    lines += [f"  group {g['name']}: {_score_line(g['score'])}" for g in doc["groups"]]
    for host in doc["hosts"]:
        stale = " STALE" if host["stale"] else ""
        lines += [
            "",
            f"Host {host['id']} {host['hostname']} ({host['os_version']}, agent"
            f" {host['agent_version']}){stale}: {_score_line(host['score'])}",
            f"  facts collected {host['facts_collected_at']}, evaluated {host['evaluated_at']}",
        ]
        for result in host["results"]:
            if result["status"] == Status.PASS.value:
                continue
            check = checks[result["check_id"]]
            note = result["reason"] or result["waiver_note"]
            waived = " (waived)" if result["waived"] else ""
            lines.append(
                f"  {result['status'].upper():<13} {check['severity']:<8}"
                f" {check['id']}: {check['title']}{waived}{f' ({note})' if note else ''}"
            )
    lines += ["", f"content sha256 {doc['content_sha256']}"]
    return "\n".join(lines) + "\n"


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar(digest: str, filename: str) -> str:
    """The ``FILE.sha256`` line, in the format ``sha256sum -c`` checks."""
    return f"{digest}  {filename}\n"
