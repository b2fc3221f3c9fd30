"""``posture-collector`` identity administration: enroll secrets, credentials and
re-enrollment approval. Every change is recorded in the audit log under ``--user``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from collector.cli_common import add_common, add_user
from collector.enrollment import EnrollmentRequest, EnrollSecretRecord, parse_duration
from collector.limits import LimitConfig
from collector.reports.model import iso
from collector.service import PostureService, ServiceError
from collector.tls import ClientCa

__all__ = ["HANDLERS", "add_parsers", "add_serve_options", "serve_options"]

Handler = Callable[[argparse.Namespace, PostureService], int]


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """``serve`` flags for mTLS, revocation and limits (defaults in docs/reliability.md)."""
    tls = serve.add_argument_group("mTLS and revocation")
    tls.add_argument("--mtls", action="store_true", help="require per-agent client certificates")
    tls.add_argument(
        "--enroll-listen", default="127.0.0.1:50052",
        help="HOST:PORT where agents enroll under --mtls (server TLS only; port 0 = any)",
    )  # fmt: skip
    tls.add_argument(
        "--client-cert-lifetime", default="30d", type=_text_duration,
        help="client certificates' lifetime; agents renew at 2/3 of it (default 30d)",
    )  # fmt: skip
    tls.add_argument(
        "--max-connection-age", default="4m", type=_duration,
        help="close every connection this old, so revocations reach idle streams (default 4m)",
    )  # fmt: skip
    tls.add_argument(
        "--max-connection-age-grace", default="30s", type=_duration,
        help="time a call in flight gets to finish after that (default 30s)",
    )  # fmt: skip
    tls.add_argument(
        "--revocation-check", default="30s", type=_duration,
        help="reload the revocation deny list this often (default 30s)",
    )  # fmt: skip
    tls.add_argument(
        "--handshake-timeout", default="20s", type=_duration,
        help="drop connections that have not finished TLS+HTTP/2 setup by then (default 20s)",
    )  # fmt: skip
    _limit_options(serve)


def _limit_options(serve: argparse.ArgumentParser) -> None:
    limits = serve.add_argument_group("limits")
    default = LimitConfig()
    for flag, value, text in (
        ("--host-batch-rate", default.host_batch_rate, "batches a second per host"),
        ("--host-batch-burst", default.host_batch_burst, "batches a host may send back to back"),
        ("--host-byte-rate", default.host_byte_rate, "bytes a second per host"),
        ("--host-byte-burst", default.host_byte_burst, "bytes a host may send back to back"),
        ("--enroll-rate", default.enroll_rate, "enrollments a second, all agents"),
        ("--enroll-burst", default.enroll_burst, "enrollments back to back, all agents"),
    ):
        limits.add_argument(flag, type=_rate, default=value, help=f"{text} (default %(default)s)")
    limits.add_argument(
        "--max-streams", type=_positive, default=default.max_streams,
        help="agent streams open at once (default %(default)s)",
    )  # fmt: skip
    limits.add_argument(
        "--rate-pause", type=float, default=default.pause_up_to,
        help="a host over its rate is paused up to this many seconds, then refused with"
        " RESOURCE_EXHAUSTED (default %(default)s; 0 refuses at once)",
    )  # fmt: skip


def _text_duration(text: str) -> str:
    _duration(text)
    return text


def _ms(value: timedelta) -> int:
    return round(value.total_seconds() * 1000)


def serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """``ServerConfig`` keyword arguments from the flags ``add_serve_options`` added."""
    options: dict[str, Any] = {
        "mtls": args.mtls,
        "client_cert_lifetime": args.client_cert_lifetime,
        "max_connection_age_ms": _ms(args.max_connection_age),
        "max_connection_age_grace_ms": _ms(args.max_connection_age_grace),
        "revocation_check_seconds": args.revocation_check.total_seconds(),
        "handshake_timeout_ms": _ms(args.handshake_timeout),
        "limits": LimitConfig(
            args.host_batch_rate, args.host_batch_burst, args.host_byte_rate,
            args.host_byte_burst, args.enroll_rate, args.enroll_burst, args.max_streams,
            max(0.0, args.rate_pause),
        ),
    }  # fmt: skip
    if args.mtls:
        options["enroll_listen"] = args.enroll_listen
        options["client_ca"] = _client_ca(args.tls_dir)
    return options


def _client_ca(directory: Path) -> ClientCa:
    if not (directory / "ca.pem").exists() or not (directory / "ca.key").exists():
        raise ServiceError(
            f"--mtls needs the CA that signs client certificates: {directory} must hold"
            " ca.pem and ca.key (--tls-dir)"
        )
    return ClientCa.from_dir(directory)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _secret_parsers(commands)
    credential = commands.add_parser("credential", help="agent credentials")
    credential_commands = credential.add_subparsers(dest="action", required=True)
    revoke = credential_commands.add_parser(
        "revoke", help="refuse this host's agent from now on (credential and certificates)"
    )
    add_common(revoke)
    add_user(revoke)
    revoke.add_argument("host", help="host id, hostname or hardware uuid")
    _enrollment_parsers(commands)


def _secret_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    secrets = commands.add_parser("enroll-secret", help="manage enroll secrets")
    actions = secrets.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new secret, printed once")
    create.add_argument("name")
    create.add_argument("--group", help="hosts enrolling with this secret join this group")
    create.add_argument(
        "--expires-in", type=_duration, help="refuse it after this long (30m, 24h, 7d)"
    )
    create.add_argument("--max-uses", type=_positive, help="refuse it after N enrollments")
    revoke = actions.add_parser("revoke", help="refuse every live secret with this name")
    revoke.add_argument("name")
    listing = actions.add_parser("list", help="secrets with their state and uses")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    for sub in (create, revoke, listing):
        add_common(sub)
    for sub in (create, revoke):
        add_user(sub)


def _enrollment_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enrollment = commands.add_parser(
        "enrollment", help="re-enrollment requests waiting for an administrator"
    )
    actions = enrollment.add_subparsers(dest="action", required=True)
    pending = actions.add_parser("pending", help="requests to take over an enrolled host")
    pending.add_argument("--all", action="store_true", help="decided requests too")
    pending.add_argument("--format", choices=("table", "json"), default="table")
    approve = actions.add_parser(
        "approve", help="let this request's agent become the host (the old one is revoked)"
    )
    deny = actions.add_parser("deny", help="refuse this request for good")
    deny.add_argument("--reason", default="", help="shown to the refused agent")
    for sub in (approve, deny):
        sub.add_argument("id", type=int)
        add_user(sub)
    for sub in (pending, approve, deny):
        add_common(sub)


def _secret_json(secret: EnrollSecretRecord, service: PostureService) -> dict[str, object]:
    return {
        "id": secret.id,
        "name": secret.name,
        "state": secret.state_at(service.clock()).value,
        "group": secret.group,
        "created_at": iso(secret.created_at),
        "expires_at": iso(secret.expires_at) if secret.expires_at else None,
        "revoked_at": iso(secret.revoked_at) if secret.revoked_at else None,
        "uses": secret.uses,
        "max_uses": secret.max_uses,
    }


def _enroll_secret(args: argparse.Namespace, service: PostureService) -> int:
    identity = service.identity
    if args.action == "create":
        record, secret = identity.create_secret(
            args.name,
            args.group,
            expires_in=args.expires_in,
            max_uses=args.max_uses,
            actor=args.user,
        )
        print(secret)
        limits = [f"hosts enrolling with it join {record.group}"] if record.group else []
        if record.expires_at:
            limits.append(f"expires {iso(record.expires_at)}")
        if record.max_uses:
            limits.append(f"{record.max_uses} use(s)")
        note = f" ({'; '.join(limits)})" if limits else ""
        print(
            f"enroll secret {record.name!r} created{note}; it is shown only once", file=sys.stderr
        )
    elif args.action == "revoke":
        count = identity.revoke_secret(args.name, args.user)
        print(f"revoked {count} enroll secret(s) named {args.name!r}")
    else:
        rows = [_secret_json(s, service) for s in service.store.list_enroll_secrets()]
        if args.format == "json":
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            uses = f"uses {row['uses']}" + (f" of {row['max_uses']}" if row["max_uses"] else "")
            expires = f"  expires {row['expires_at']}" if row["expires_at"] else ""
            group = f"  group {row['group']}" if row["group"] else ""
            print(f"{row['id']:>4}  {row['name']:<24} {row['state']:<8} {uses}{expires}{group}")
    return 0


def _revoke_credential(args: argparse.Namespace, service: PostureService) -> int:
    host = service.find_host(args.host)
    certificates = service.identity.revoke_host(host, args.user)
    extra = f" and {certificates} client certificate(s)" if certificates else ""
    print(f"agent credential{extra} of host {host.id} ({host.identity.hostname}) revoked")
    return 0


def _request_json(request: EnrollmentRequest) -> dict[str, object]:
    identity = request.identity
    return {
        "id": request.id,
        "host_id": request.host_id,
        "state": request.state.value,
        "hostname": identity.hostname,
        "hardware_uuid": identity.hardware_uuid,
        "hardware_serial": identity.hardware_serial,
        "platform": identity.platform,
        "os_version": identity.os_version,
        "agent_version": identity.agent_version,
        "peer": request.peer,
        "requested_at": iso(request.requested_at),
        "last_attempt_at": iso(request.last_attempt_at),
        "attempts": request.attempts,
        "decided_by": request.decided_by,
        "decided_at": iso(request.decided_at) if request.decided_at else None,
        "reason": request.reason,
    }


def _enrollment(args: argparse.Namespace, service: PostureService) -> int:
    identity = service.identity
    if args.action in ("approve", "deny"):
        approve = args.action == "approve"
        identity.decide(args.id, approve, args.user, "" if approve else args.reason)
        outcome = "approved: its agent becomes the host at its next retry" if approve else "denied"
        print(f"enrollment request {args.id} {outcome}")
        return 0
    rows = [_request_json(r) for r in identity.pending_requests(include_decided=args.all)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no re-enrollment requests waiting", file=sys.stderr)
    for row in rows:
        host = service.store.get_host(int(str(row["host_id"])))
        current = host.identity.hostname if host else "?"
        print(
            f"{row['id']:>4}  {row['state']:<9} host {row['host_id']} ({current}) claimed by"
            f" {row['hostname']} {row['hardware_uuid']}/{row['hardware_serial']} from"
            f" {row['peer'] or '?'}; {row['attempts']} attempt(s) since {row['requested_at']}"
        )
    return 0


HANDLERS: dict[str, Handler] = {
    "enroll-secret": _enroll_secret,
    "credential": _revoke_credential,
    "enrollment": _enrollment,
}
