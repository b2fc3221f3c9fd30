"""``posture-collector`` commands for auditors and analysts: report, verify, drift, history."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from collector.cli_common import add_common, add_user, parse_instant, parse_since
from collector.drift import EventKind
from collector.governance import Governance
from collector.policy.model import FRAMEWORKS
from collector.reporting import ReportRequest, issue_report_file, issue_report_to, verify_report
from collector.reports import FORMATS, sidecar
from collector.reports.drift import event_document, render_events
from collector.retention import compact
from collector.service import PostureService, ServiceError
from collector.store import EventFilter

__all__ = ["HANDLERS", "add_parsers"]

Handler = Callable[[argparse.Namespace, PostureService], int]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser("report", help="compliance report for auditors")
    add_common(report)
    add_user(report)
    report.add_argument("--group", help="only hosts in this group (as of the instant)")
    report.add_argument("--host", help="only this host (id, hostname or hardware uuid)")
    report.add_argument("--framework", choices=sorted(FRAMEWORKS), help="only checks mapped to it")
    report.add_argument("--as-of", help="ISO date or date-time (UTC); default: now")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("--output", type=Path, help="write here (and FILE.sha256) not stdout")
    report.add_argument(
        "--workers",
        type=_positive,
        help="processes reading hosts in parallel (default: one per core for a large fleet;"
        " 1: this process only); the file is the same whatever the number",
    )

    verify = commands.add_parser("verify", help="is this report file one we issued, unaltered?")
    add_common(verify)
    verify.add_argument("file", type=Path)

    drift = commands.add_parser("drift", help="drift events: check flips and config changes")
    add_common(drift)
    drift.add_argument("--host", help="host id, hostname or hardware uuid")
    drift.add_argument("--group")
    drift.add_argument("--since", help="ISO date/date-time, or 30m, 24h, 7d back from now")
    drift.add_argument("--until", help="ISO date or date-time")
    drift.add_argument("--kind", choices=[kind.value for kind in EventKind])
    drift.add_argument("--format", choices=("table", "json", "csv"), default="table")

    history = commands.add_parser("history", help="fact history and retention")
    actions = history.add_subparsers(dest="action", required=True)
    changes = actions.add_parser("changes", help="row-level fact changes of one host")
    add_common(changes)
    changes.add_argument("host")
    changes.add_argument("--view", help="one tracked view or table (e.g. listening_ports)")
    changes.add_argument("--since")
    changes.add_argument("--until")
    changes.add_argument("--format", choices=("table", "json"), default="table")
    compaction = actions.add_parser("compact", help="drop history older than the retention")
    add_common(compaction)
    compaction.add_argument("--keep-days", type=int, required=True)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return value


def _report(args: argparse.Namespace, service: PostureService) -> int:
    if args.format == "pdf" and args.output is None:
        raise ServiceError("a PDF report needs --output FILE")
    request = ReportRequest(
        fmt=args.format,
        user=args.user,
        group=args.group,
        host=args.host,
        framework=args.framework,
        as_of=parse_instant(args.as_of) if args.as_of else None,
        workers=args.workers,
    )
    if args.output is None:
        issued = issue_report_to(service, request, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        issued = issue_report_file(service, request, args.output)
        sidecar_path = args.output.with_name(args.output.name + ".sha256")
        sidecar_path.write_text(sidecar(issued.sha256, args.output.name))
        print(f"report written to {args.output}", file=sys.stderr)
    print(f"report sha256 {issued.sha256}", file=sys.stderr)
    print(f"content sha256 {issued.report.content_sha256}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace, service: PostureService) -> int:
    issued = verify_report(service, args.file.read_bytes())
    if not issued:
        print(f"{args.file}: NOT issued by this collector, or altered since", file=sys.stderr)
        return 1
    for record in issued:
        print(
            f"{args.file}: issued {record.generated_at.isoformat()} by {record.generated_by},"
            f" {record.format}, as of {record.as_of.isoformat()}, scope"
            f" {json.dumps(record.scope, sort_keys=True)}, content sha256 {record.content_sha256}"
        )
    return 0


def _drift(args: argparse.Namespace, service: PostureService) -> int:
    now = service.clock()
    governance = Governance(service)
    host_ids: set[int] | None = None
    if args.host:
        host_ids = {service.find_host(args.host).id}
    if args.group:
        members = {host.id for host in governance.hosts_in_group(args.group, now)}
        host_ids = members if host_ids is None else host_ids & members
    where = EventFilter(
        host_ids=frozenset(host_ids) if host_ids is not None else None,
        since=parse_since(args.since, now) if args.since else None,
        until=parse_instant(args.until) if args.until else None,
        kind=EventKind(args.kind) if args.kind else None,
    )
    events = service.store.drift_events(where)
    hosts = {host.id: host for host in service.store.list_hosts()}
    groups = governance.memberships(list(hosts.values()), now)
    docs = [
        event_document(
            stored,
            hosts.get(stored.host_id),
            service.checks.get(stored.event.check_id),
            groups.get(stored.host_id, ()),
        )
        for stored in events
    ]
    sys.stdout.write(render_events(docs, args.format))
    return 0


def _history(args: argparse.Namespace, service: PostureService) -> int:
    if args.action == "compact":
        boundary, deleted = compact(service.store, args.keep_days, service.clock())
        print(f"history before {boundary.isoformat()} compacted: {deleted} rows deleted")
        return 0
    host = service.find_host(args.host)
    now = service.clock()
    changes = service.store.fact_changes(
        host.id,
        args.view,
        parse_since(args.since, now) if args.since else None,
        parse_instant(args.until) if args.until else None,
    )
    if args.format == "json":
        rows = [
            {
                "id": c.id,
                "view": c.view,
                "seq": c.seq,
                "collected_at": c.collected_at.isoformat(),
                "at": c.at.isoformat(),
                "change": c.change,
                "identity": json.loads(c.identity),
                "old": json.loads(c.old) if c.old else None,
                "new": json.loads(c.new) if c.new else None,
            }
            for c in changes
        ]
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    for c in changes:
        values = f" {c.old or '-'} -> {c.new or '-'}" if c.change == "modified" else ""
        print(f"{c.at.isoformat()}  {c.change:<9} {c.view:<16} {c.identity}{values}")
    return 0


HANDLERS: dict[str, Handler] = {
    "report": _report,
    "verify": _verify,
    "drift": _drift,
    "history": _history,
}
