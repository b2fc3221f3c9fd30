"""``posture-collector``: a thin command line over the collector's service.

Commands other than ``serve`` open the same SQLite file directly (WAL lets them read and
write beside a running server). Exit codes: 0 success, 1 a finding (failing policy check
files), 2 usage errors (unknown host, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from collector.policy.loader import PolicyError, load_packs
from collector.reports import FORMATS, build_report, render
from collector.service import HostView, PostureService, ServiceError
from collector.store import SqliteStore
from collector.tls import ensure_local_pki

__all__ = ["main"]

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(os.environ.get("POSTURE_DB", "posture.db")),
        help="SQLite database (default: $POSTURE_DB or ./posture.db)",
    )
    parser.add_argument("--policies", type=Path, default=REPO_POLICIES, help="policy packs")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posture-collector", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC collector")
    _add_common(serve)
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

    secrets = commands.add_parser("enroll-secret", help="manage enroll secrets")
    secret_commands = secrets.add_subparsers(dest="action", required=True)
    for action in ("create", "revoke"):
        sub = secret_commands.add_parser(action)
        _add_common(sub)
        sub.add_argument("name")
    _add_common(secret_commands.add_parser("list"))

    hosts = commands.add_parser("hosts", help="list hosts with scores")
    _add_common(hosts)
    hosts.add_argument("--format", choices=("table", "json"), default="table")
    host = commands.add_parser("host", help="one host's checks with status and evidence")
    _add_common(host)
    host.add_argument("host", help="host id, hostname or hardware uuid")
    host.add_argument("--format", choices=("table", "json"), default="table")

    credential = commands.add_parser("credential", help="agent credentials")
    credential_commands = credential.add_subparsers(dest="action", required=True)
    revoke = credential_commands.add_parser("revoke", help="refuse this host's agent from now on")
    _add_common(revoke)
    revoke.add_argument("host")

    policies = commands.add_parser("policies", help="policy packs")
    policy_commands = policies.add_subparsers(dest="action", required=True)
    check = policy_commands.add_parser("check", help="validate packs; exit 1 with the errors")
    check.add_argument("--policies", type=Path, default=REPO_POLICIES)

    report = commands.add_parser("report", help="compliance report")
    _add_common(report)
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("--output", type=Path, help="write to this file instead of stdout")

    quickstart = commands.add_parser("quickstart", help="collector + local agent, end to end")
    quickstart.add_argument("--dir", type=Path, default=Path(".posture"))
    quickstart.add_argument("--port", type=int, default=50051)
    return parser


@contextmanager
def _service(args: argparse.Namespace, interval: int = 300) -> Iterator[PostureService]:
    packs = load_packs(args.policies)
    store = SqliteStore(args.db)
    service = PostureService(store, packs, interval_seconds=interval)
    try:
        yield service
    finally:
        service.close()
        store.close()


def _print_hosts(views: list[HostView], fmt: str) -> int:
    if fmt == "json":
        print(json.dumps([_view_json(v) for v in views], indent=2, default=str))
        return 0
    print(f"{'ID':>4}  {'HOSTNAME':<24} {'PLATFORM':<8} {'SCORE':>7}  {'FAIL':>4}  LAST COLLECTED")
    for view in views:
        percent = "n/a" if view.score.percent is None else f"{view.score.percent:.1f}%"
        seen = (
            view.host.last_collected_at.isoformat(timespec="seconds")
            if view.host.last_collected_at
            else "never"
        )
        stale = "  STALE" if view.stale else ""
        print(
            f"{view.host.id:>4}  {view.host.identity.hostname:<24} {view.host.identity.platform:<8}"
            f" {percent:>7}  {view.score.failed:>4}  {seen}{stale}"
        )
    return 0


def _view_json(view: HostView) -> dict[str, object]:
    return {
        "host": asdict(view.host),
        "stale": view.stale,
        "score": asdict(view.score),
        "results": [asdict(result) for result in view.results],
    }


def _print_host(service: PostureService, view: HostView, fmt: str) -> int:
    if fmt == "json":
        print(json.dumps(_view_json(view), indent=2, default=str))
        return 0
    _print_hosts([view], "table")
    for result in view.results:
        check = service.checks[result.check_id]
        print(f"\n[{result.status.value.upper()}] {check.severity.value} {check.id}: {check.title}")
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

        return run_quickstart(args.dir, args.port)
    handlers: dict[str, Callable[[argparse.Namespace, PostureService], int]] = {
        "enroll-secret": _enroll_secret,
        "hosts": lambda a, s: _print_hosts(s.host_views(), a.format),
        "host": lambda a, s: _print_host(s, s.host_view(s.find_host(a.host)), a.format),
        "credential": _revoke_credential,
        "report": _report,
    }
    with _service(args) as service:
        return handlers[command](args, service)


def _enroll_secret(args: argparse.Namespace, service: PostureService) -> int:
    if args.action == "create":
        record, secret = service.create_enroll_secret(args.name)
        print(secret)
        print(f"enroll secret {record.name!r} created; it is shown only once", file=sys.stderr)
    elif args.action == "revoke":
        count = service.store.revoke_enroll_secret(args.name, service.clock())
        if not count:
            raise ServiceError(f"no live enroll secret named {args.name!r}")
        print(f"revoked {count} enroll secret(s) named {args.name!r}")
    else:
        for s in service.store.list_enroll_secrets():
            state = f"revoked {s.revoked_at.isoformat()}" if s.revoked_at else "live"
            print(f"{s.id:>4}  {s.name:<24} {state:<36} uses {s.uses}")
    return 0


def _revoke_credential(args: argparse.Namespace, service: PostureService) -> int:
    host = service.find_host(args.host)
    service.revoke_credential(host)
    print(f"agent credential of host {host.id} ({host.identity.hostname}) revoked")
    return 0


def _report(args: argparse.Namespace, service: PostureService) -> int:
    views = service.host_views()
    report = build_report(
        views, service.fleet(views), service.packs, service.checks, service.clock()
    )
    text = render(report, args.format)
    if args.output:
        args.output.write_text(text)
        print(f"report written to {args.output} (sha256 {report.sha256})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from collector.transport.server import ServerConfig, run_server

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ServiceError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        cert, key = args.tls_cert, args.tls_key
    else:
        pki = ensure_local_pki(args.tls_dir)
        cert, key = pki.server_cert, pki.server_key
    config = ServerConfig(args.listen, cert, key, max_message_bytes=args.max_message_bytes)
    with _service(args, interval=args.interval) as service:
        evaluated = service.evaluate_all()
        logging.getLogger("posture.collector").info("re-evaluated %d host(s)", evaluated)
        asyncio.run(run_server(service, config))
    return 0


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
