"""``posture-collector`` administration: waivers, groups and baselines."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict

from collector.cli_common import add_common, add_user, parse_instant
from collector.drift import DriftEvent
from collector.governance import Governance, WaiverRequest
from collector.history import Scope, take_snapshot
from collector.reports.model import iso
from collector.service import PostureService, ServiceError
from collector.waivers import Waiver, WaiverScope

__all__ = ["HANDLERS", "add_parsers"]

Handler = Callable[[argparse.Namespace, PostureService], int]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _waiver_parsers(commands)
    _group_parsers(commands)
    baseline = commands.add_parser("baseline", help="configuration baselines")
    actions = baseline.add_subparsers(dest="action", required=True)
    approve = actions.add_parser("approve", help="accept hosts' current configuration")
    add_common(approve)
    add_user(approve)
    target = approve.add_mutually_exclusive_group(required=True)
    target.add_argument("host", nargs="?", help="host id, hostname or hardware uuid")
    target.add_argument("--group", help="every host in this group")
    diff = actions.add_parser("diff", help="how a host differs from its baseline now")
    add_common(diff)
    diff.add_argument("host")
    diff.add_argument("--format", choices=("table", "json"), default="table")


def _waiver_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    waiver = commands.add_parser("waiver", help="approved, expiring exceptions to a check")
    actions = waiver.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="request a waiver (another person approves)")
    add_common(create)
    add_user(create)
    create.add_argument("--check", required=True, help="check id")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--host", help="one host (id, hostname or hardware uuid)")
    scope.add_argument("--group", help="every host of a group")
    scope.add_argument("--fleet", action="store_true", help="every host")
    create.add_argument("--justification", required=True)
    create.add_argument("--expires", required=True, help="ISO date (00:00 UTC) or date-time")
    create.add_argument("--ticket", default="", help="change or risk ticket reference")
    create.add_argument("--compensating-control", default="")
    approve = actions.add_parser("approve", help="approve someone else's waiver request")
    revoke = actions.add_parser("revoke", help="end a waiver now")
    for sub in (approve, revoke):
        add_common(sub)
        add_user(sub)
        sub.add_argument("id", type=int)
    revoke.add_argument("--reason", default="")
    listing = actions.add_parser("list", help="waivers with their state")
    add_common(listing)
    listing.add_argument("--format", choices=("table", "json"), default="table")


def _group_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("group", help="groups (departments) and their label rules")
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="groups with their hosts and scores")
    add_common(listing)
    listing.add_argument("--format", choices=("table", "json"), default="table")
    rule = actions.add_parser("rule", help="hostname rules that put hosts in groups")
    rule_actions = rule.add_subparsers(dest="rule_action", required=True)
    add = rule_actions.add_parser("add")
    add_common(add)
    add_user(add)
    add.add_argument("group")
    add.add_argument("--hostname", required=True, help="shell pattern, e.g. 'pd-*'")
    remove = rule_actions.add_parser("remove")
    add_common(remove)
    add_user(remove)
    remove.add_argument("id", type=int)
    add_common(rule_actions.add_parser("list"))


def _waiver_json(waiver: Waiver, service: PostureService) -> dict[str, object]:
    data = asdict(waiver)
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
    data["scope"] = waiver.scope.value
    data["state"] = waiver.state_at(service.clock()).value
    return data


def _print_waiver(waiver: Waiver, service: PostureService) -> None:
    state = waiver.state_at(service.clock()).value
    approval = f"approved by {waiver.approved_by}" if waiver.approved_by else "awaiting approval"
    print(
        f"{waiver.id:>4}  {state:<9} {waiver.check_id}  {waiver.scope_label}; requested by"
        f" {waiver.requested_by}, {approval}; expires {iso(waiver.expires_at)}"
    )


def _waiver(args: argparse.Namespace, service: PostureService) -> int:
    governance = Governance(service)
    if args.action == "create":
        scope = (
            WaiverScope.HOST
            if args.host
            else WaiverScope.GROUP
            if args.group
            else WaiverScope.FLEET
        )
        request = WaiverRequest(
            check_id=args.check,
            scope=scope,
            target=args.host or args.group,
            justification=args.justification,
            ticket=args.ticket,
            compensating_control=args.compensating_control,
            expires_at=parse_instant(args.expires),
        )
        waiver = governance.request_waiver(request, args.user)
        print(f"waiver {waiver.id} requested; it applies once someone else approves it")
    elif args.action == "approve":
        _print_waiver(governance.approve_waiver(args.id, args.user), service)
    elif args.action == "revoke":
        _print_waiver(governance.revoke_waiver(args.id, args.user, args.reason), service)
    elif args.format == "json":
        waivers = [_waiver_json(w, service) for w in service.store.list_waivers()]
        print(json.dumps(waivers, indent=2, sort_keys=True))
    else:
        for waiver in service.store.list_waivers():
            _print_waiver(waiver, service)
    return 0


def _group(args: argparse.Namespace, service: PostureService) -> int:
    governance = Governance(service)
    if args.action == "rule":
        return _group_rule(args, governance)
    now = service.clock()
    snapshot = take_snapshot(service.store, service.checks, now, Scope())
    rows = []
    for name in sorted(governance.known_groups()):
        score = snapshot.groups.get(name)
        rows.append(
            {
                "group": name,
                "hosts": score.hosts if score else 0,
                "raw_percent": score.percent if score else None,
                "adjusted_percent": score.adjusted_percent if score else None,
                "failed": score.failed if score else 0,
            }
        )
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'GROUP':<24} {'HOSTS':>5} {'RAW':>7} {'WAIVED':>7} {'FAIL':>5}")
    for row in rows:
        raw, adjusted = row["raw_percent"], row["adjusted_percent"]
        print(
            f"{row['group']:<24} {row['hosts']:>5} {'n/a' if raw is None else f'{raw:.1f}%':>7}"
            f" {'n/a' if adjusted is None else f'{adjusted:.1f}%':>7} {row['failed']:>5}"
        )
    return 0


def _group_rule(args: argparse.Namespace, governance: Governance) -> int:
    if args.rule_action == "add":
        rule = governance.add_group_rule(args.group, args.hostname, args.user)
        print(f"rule {rule.id}: hostnames matching {rule.hostname_glob!r} join {rule.group}")
    elif args.rule_action == "remove":
        governance.delete_group_rule(args.id, args.user)
        print(f"rule {args.id} removed")
    else:
        for rule in governance.store.group_rules():
            ended = (
                f", removed {iso(rule.deleted_at)} by {rule.deleted_by}" if rule.deleted_at else ""
            )
            print(
                f"{rule.id:>4}  {rule.group:<20} hostname {rule.hostname_glob!r}; added"
                f" {iso(rule.created_at)} by {rule.created_by}{ended}"
            )
    return 0


def _deviation_json(event: DriftEvent) -> dict[str, object]:
    return {
        "view": event.view,
        "type": event.type.value,
        "identity": json.loads(event.identity),
        "baseline": json.loads(event.old),
        "current": json.loads(event.new),
        "changed_fields": list(event.changed_fields),
    }


def _baseline(args: argparse.Namespace, service: PostureService) -> int:
    governance = Governance(service)
    if args.action == "diff":
        host = service.find_host(args.host)
        deviations = [_deviation_json(e) for e in service.store.baseline_deviations(host.id)]
        if args.format == "json":
            print(json.dumps(deviations, indent=2, sort_keys=True))
        for row in deviations if args.format == "table" else ():
            print(f"{row['type']:<9} {row['view']:<16} {json.dumps(row['identity'])}"
                  f" {json.dumps(row['baseline'])} -> {json.dumps(row['current'])}")  # fmt: skip
        return 0
    now = service.clock()
    hosts = (
        governance.hosts_in_group(args.group, now) if args.group else [service.find_host(args.host)]
    )
    if not hosts:
        raise ServiceError(f"group {args.group!r} has no hosts")
    for host_id, views in governance.approve_baselines(hosts, args.user).items():
        print(f"host {host_id}: baseline approved by {args.user} ({views} tracked views)")
    return 0


HANDLERS: dict[str, Handler] = {"waiver": _waiver, "group": _group, "baseline": _baseline}
