"""``posture-collector``: a thin command line over the collector's service.

Commands other than ``serve`` open the same SQLite file directly (WAL lets them read and
write beside a running server). Exit codes: 0 success, 1 a finding (failing policy check
files, a report that does not verify), 2 usage errors (unknown host, bad arguments).
Administration lives in ``cli_admin``, reports and drift in ``cli_reports``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from collector import cli_access, cli_admin, cli_audit, cli_identity, cli_reports
from collector.cli_common import REPO_POLICIES, add_common, open_service
from collector.delivery import host_delivery_json, host_delivery_lines
from collector.governance import Governance
from collector.notify import Notifier, WebhookConfig
from collector.policy.loader import PolicyError, load_packs
from collector.retention import RetentionThread
from collector.service import DEFAULT_SCORE_DROP_POINTS, HostView, PostureService, ServiceError
from collector.tls import ensure_local_pki

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posture-collector", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC collector")
    add_common(serve)
    serve.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0 = any)")
    serve.add_argument(
        "--tls-dir",
        type=Path,
        default=Path(".posture/tls"),
        help="local CA dir; created with a new CA if missing",
    )
    serve.add_argument(
        "--tls-cert", type=Path, help="server certificate (PEM), overrides --tls-dir"
    )
    serve.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    serve.add_argument("--interval", type=int, default=300, help="agents' collection interval, s")
    serve.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    serve.add_argument("--metrics-listen", help="HOST:PORT for Prometheus /metrics (default off)")
    serve.add_argument(
        "--http-listen", help="HOST:PORT for the dashboard and JSON API (default off; port 0 = any)"
    )
    serve.add_argument("--webhook-url", help="POST each new drift event here (http/https)")
    serve.add_argument("--webhook-secret-file", type=Path, help="HMAC-SHA256 key for webhooks")
    serve.add_argument(
        "--score-drop",
        type=float,
        default=DEFAULT_SCORE_DROP_POINTS,
        help="a host score falling by more points than this is drift (default 10)",
    )
    serve.add_argument("--retention-days", type=int, help="compact older history daily")
    cli_identity.add_serve_options(serve)

    hosts = commands.add_parser("hosts", help="list hosts with scores")
    add_common(hosts)
    hosts.add_argument("--group", help="only hosts in this group")
    hosts.add_argument("--format", choices=("table", "json"), default="table")
    host = commands.add_parser("host", help="one host's checks with status and evidence")
    add_common(host)
    host.add_argument("host", help="host id, hostname or hardware uuid")
    host.add_argument("--format", choices=("table", "json"), default="table")

    policies = commands.add_parser("policies", help="policy packs")
    policy_commands = policies.add_subparsers(dest="action", required=True)
    check = policy_commands.add_parser("check", help="validate packs; exit 1 with the errors")
    check.add_argument("--policies", type=Path, default=REPO_POLICIES)

    cli_identity.add_parsers(commands)
    cli_reports.add_parsers(commands)
    cli_admin.add_parsers(commands)
    cli_audit.add_parsers(commands)
    cli_access.add_parsers(commands)

    quickstart = commands.add_parser("quickstart", help="collector + local agent, end to end")
    quickstart.add_argument("--dir", type=Path, default=Path(".posture"))
    quickstart.add_argument("--port", type=int, default=50051, help="the collector's gRPC port")
    quickstart.add_argument(
        "--http-port", type=int, default=8765, help="the dashboard's port (0 = any free one)"
    )
    quickstart.add_argument(
        "--keep-serving",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the collector and dashboard up until Ctrl-C (default: when run in a terminal)",
    )
    return parser


def _print_hosts(views: list[HostView], fmt: str) -> int:
    if fmt == "json":
        print(json.dumps([_view_json(v) for v in views], indent=2, default=str))
        return 0
    print(
        f"{'ID':>4}  {'HOSTNAME':<24} {'PLATFORM':<8} {'SCORE':>7} {'WAIVED':>7}  {'FAIL':>4}"
        f"  {'LAST COLLECTED':<25} GROUPS"
    )
    for view in views:
        raw, adjusted = (
            "n/a" if value is None else f"{value:.1f}%"
            for value in (view.score.percent, view.score.adjusted_percent)
        )
        seen = (
            view.host.last_collected_at.isoformat(timespec="seconds")
            if view.host.last_collected_at
            else "never"
        )
        stale = " STALE" if view.stale else ""
        print(
            f"{view.host.id:>4}  {view.host.identity.hostname:<24} {view.host.identity.platform:<8}"
            f" {raw:>7} {adjusted:>7}  {view.score.failed:>4}  {seen + stale:<25}"
            f" {', '.join(view.groups)}"
        )
    return 0


def _view_json(view: HostView) -> dict[str, object]:
    return {
        "host": asdict(view.host),
        "groups": list(view.groups),
        "stale": view.stale,
        "score": asdict(view.score),
        "results": [
            asdict(result) | {"waived": result.check_id in view.waived} for result in view.results
        ],
    }


def _print_host(service: PostureService, view: HostView, fmt: str) -> int:
    if fmt == "json":
        document = _view_json(view) | host_delivery_json(service.store, view.host)
        print(json.dumps(document, indent=2, default=str))
        return 0
    _print_hosts([view], "table")
    for line in host_delivery_lines(service.store, view.host):
        print(line)
    for result in view.results:
        check = service.checks[result.check_id]
        waived = " (waived)" if result.check_id in view.waived else ""
        print(
            f"\n[{result.status.value.upper()}]{waived} {check.severity.value} {check.id}:"
            f" {check.title}"
        )
        if result.reason:
            print(f"  reason: {result.reason}")
        for row in result.evidence[:10]:
            print("  evidence: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _run(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "policies":
        packs = load_packs(args.policies)
        count = sum(len(pack.checks) for pack in packs)
        for pack in packs:
            print(f"{pack.name} {pack.version}: {len(pack.checks)} checks, sha256 {pack.sha256}")
        print(f"ok: {len(packs)} pack(s), {count} checks")
        return 0
    if command == "serve":
        return _serve(args)
    if command == "quickstart":
        from collector.quickstart import run_quickstart

        keep = sys.stdin.isatty() if args.keep_serving is None else args.keep_serving
        return run_quickstart(args.dir, args.port, args.http_port, keep_serving=keep)
    handlers: dict[str, Callable[[argparse.Namespace, PostureService], int]] = {
        "hosts": _hosts,
        "host": lambda a, s: _print_host(s, s.host_view(s.find_host(a.host)), a.format),
        **cli_identity.HANDLERS,
        **cli_reports.HANDLERS,
        **cli_admin.HANDLERS,
        **cli_audit.HANDLERS,
        **cli_access.HANDLERS,
    }
    with open_service(args) as service:
        return handlers[command](args, service)


def _hosts(args: argparse.Namespace, service: PostureService) -> int:
    if args.group is None:
        return _print_hosts(service.host_views(), args.format)
    members = {host.id for host in Governance(service).hosts_in_group(args.group, service.clock())}
    return _print_hosts([v for v in service.host_views() if v.host.id in members], args.format)


def _serve(args: argparse.Namespace) -> int:
    from collector.transport.server import ServerConfig, run_server

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ServiceError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        cert, key = args.tls_cert, args.tls_key
    else:  # the local CA also signs agents' client certificates under --mtls
        pki = ensure_local_pki(args.tls_dir)
        cert, key = pki.server_cert, pki.server_key
    config = ServerConfig(
        args.listen,
        cert,
        key,
        max_message_bytes=args.max_message_bytes,
        metrics_listen=args.metrics_listen,
        http_listen=args.http_listen,
        **cli_identity.serve_options(args),
    )
    webhook = _webhook_config(args)
    if args.retention_days is not None and args.retention_days < 1:
        raise ServiceError("--retention-days must be at least 1")
    with open_service(args, interval=args.interval) as service:
        service.score_drop_points = args.score_drop
        notifier = _start_notifier(service, webhook)
        retention = _start_retention(service, args.retention_days)
        try:
            evaluated = service.evaluate_all()
            logging.getLogger("posture.collector").info("re-evaluated %d host(s)", evaluated)
            asyncio.run(run_server(service, config))
        finally:
            for thread in (notifier, retention):
                if thread is not None:
                    thread.stop()
    return 0


def _webhook_config(args: argparse.Namespace) -> WebhookConfig | None:
    if bool(args.webhook_url) != bool(args.webhook_secret_file):
        raise ServiceError("--webhook-url and --webhook-secret-file go together")
    if not args.webhook_url:
        return None
    secret = args.webhook_secret_file.read_bytes().strip()
    try:
        return WebhookConfig(args.webhook_url, secret)
    except ValueError as error:
        raise ServiceError(str(error)) from None


def _start_notifier(service: PostureService, config: WebhookConfig | None) -> Notifier | None:
    """Queue drift events for the webhook and deliver them from a thread of their own."""
    if config is None:
        return None
    service.store.notify_events = True
    notifier = Notifier(service.store.location, config, service.checks, service.clock)
    service.after_ingest = notifier.wake
    notifier.start()
    return notifier


def _start_retention(service: PostureService, keep_days: int | None) -> RetentionThread | None:
    if keep_days is None:
        return None
    retention = RetentionThread(service.store.location, keep_days, service.clock)
    retention.start()
    return retention


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args)
    except PolicyError as error:
        print(f"posture-collector: invalid policy packs:\n{error}", file=sys.stderr)
        return 1
    except (ServiceError, OSError) as error:
        print(f"posture-collector: {error}", file=sys.stderr)
        return 2
