"""Drift events as documents (``posture.drift-event/1``): listed, exported, and posted.

The same document is a row of ``posture-collector drift --format json`` and the body of a
webhook notification, so a receiver and an analyst read the same fields.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from collector.drift import StoredEvent
from collector.model import Host
from collector.policy.model import Check
from collector.reports.model import iso

__all__ = ["EVENT_SCHEMA", "event_document", "render_events"]

EVENT_SCHEMA = "posture.drift-event/1"
FORMATS = ("table", "json", "csv")


def event_document(
    stored: StoredEvent, host: Host | None, check: Check | None, groups: Sequence[str] = ()
) -> dict[str, Any]:
    event = stored.event
    return {
        "schema": EVENT_SCHEMA,
        "id": stored.id,
        "at": iso(stored.at),
        "kind": event.kind.value,
        "type": event.type.value,
        "host": {
            "id": stored.host_id,
            "hostname": host.identity.hostname if host else None,
            "hardware_uuid": host.identity.hardware_uuid if host else None,
            "platform": host.identity.platform if host else None,
            "groups": list(groups),
        },
        "check": (
            {"id": check.id, "title": check.title, "severity": check.severity.value}
            if check
            else (
                {"id": event.check_id, "title": None, "severity": None} if event.check_id else None
            )
        ),
        "view": event.view or None,
        "identity": json.loads(event.identity),
        "old": json.loads(event.old),
        "new": json.loads(event.new),
        "changed_fields": list(event.changed_fields),
        "detail": event.detail,
    }


def _brief(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _subject(doc: Mapping[str, Any]) -> str:
    if doc["check"]:
        return f"{doc['check']['id']}"
    if doc["view"]:
        return f"{doc['view']} {_brief(doc['identity'])}"
    return "host score"


def render_events(docs: Sequence[Mapping[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(docs), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["id", "at", "kind", "type", "host_id", "hostname", "groups", "check_id", "view",
             "identity", "old", "new", "changed_fields", "detail"]
        )  # fmt: skip
        for doc in docs:
            values = [json.dumps(doc[key], sort_keys=True) for key in ("identity", "old", "new")]
            writer.writerow(
                [doc["id"], doc["at"], doc["kind"], doc["type"], doc["host"]["id"],
                 doc["host"]["hostname"], " ".join(doc["host"]["groups"]),
                 doc["check"]["id"] if doc["check"] else "", doc["view"] or "", *values,
                 " ".join(doc["changed_fields"]), doc["detail"]]
            )  # fmt: skip
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    lines = [f"{'ID':>6}  {'AT':<32} {'HOST':<20} {'KIND':<10} {'TYPE':<16} WHAT"]
    for doc in docs:
        change = f"{_brief(doc['old'])} -> {_brief(doc['new'])}"
        lines.append(
            f"{doc['id']:>6}  {doc['at']:<32} {doc['host']['hostname'] or doc['host']['id']!s:<20}"
            f" {doc['kind']:<10} {doc['type']:<16} {_subject(doc)}: {change}"
        )
    return "\n".join(lines) + "\n"
