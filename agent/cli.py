"""``posture-agent``: a thin command line over the agent's modules.

Exit codes: 0 success, 1 the work could not finish (collector unreachable: data stays
spooled), 2 usage or configuration errors (bad plan, not enrolled, refused credential).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import grpc

from agent.collect import collect
from agent.daemon import AGENT_VERSION, Agent, DeliveryLog
from agent.enroll import EnrollOptions, enroll_machine
from agent.guard import GuardLimits, ResourceGuard, RestartRequested
from agent.identity import ClientTls, host_identity
from agent.plan import CollectionPlan, PlanError, load_plan, plan_from_packs
from agent.service import ServiceError, agent_service, render_definition
from agent.service.install import install_unit
from agent.service.model import PLATFORMS
from agent.service.systemd import UNIT_DIR, local_systemd_version
from agent.sources import default_sources, platform
from agent.sources.base import FactSource, TableRequest
from agent.spool import DEFAULT_MAX_AGE_HOURS, DEFAULT_MAX_MB, Enrollment, Spool, SpoolLimits
from agent.transport import TransportError

__all__ = ["main"]

log = logging.getLogger("posture.agent")
REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2."""


def _default_state_dir() -> Path:
    if env := os.environ.get("POSTURE_AGENT_STATE_DIR"):
        return Path(env)
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/posture-agent")
    return Path.home() / ".local" / "state" / "posture-agent"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posture-agent", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    parser.add_argument("--osquery-socket", help="osqueryd extension socket (default per OS)")
    commands = parser.add_subparsers(dest="command", required=True)

    facts = commands.add_parser("facts", help="print this machine's fact tables as JSON")
    facts.add_argument("--table", action="append", help="only this table (repeatable)")
    facts.add_argument("--plan", type=Path, help="collection plan JSON (default: from packs)")
    facts.add_argument("--policies", type=Path, default=REPO_POLICIES, help="policy packs")

    for name, text in (
        ("enroll", "enroll this machine with a collector"),
        ("once", "collect once, send everything spooled, and exit"),
        ("run", "run as a daemon: collect on the plan's interval and stream"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--state-dir", type=Path, default=_default_state_dir(), help="spool and credential"
        )
    enroll_cmd = commands.choices["enroll"]
    enroll_cmd.add_argument("--collector", required=True, help="HOST:PORT of the collector")
    enroll_cmd.add_argument("--ca-cert", type=Path, required=True, help="CA that signed it")
    enroll_cmd.add_argument(
        "--secret", default=os.environ.get("POSTURE_ENROLL_SECRET"), help="enroll secret"
    )
    enroll_cmd.add_argument(
        "--enroll-address",
        help="HOST:PORT of an mTLS collector's enrollment listener (default: --collector)",
    )
    enroll_cmd.add_argument(
        "--wait", action="store_true",
        help="if this machine is enrolled already, retry until an administrator decides",
    )  # fmt: skip
    enroll_cmd.add_argument("--retry-seconds", type=float, default=60.0, help="with --wait")
    commands.choices["once"].add_argument("--timeout", type=float, default=120.0)
    run = commands.choices["run"]
    limits = GuardLimits()
    run.add_argument(
        "--max-rss-mb", type=float, default=limits.max_rss_mb,
        help="restart cleanly above this resident memory (default %(default)s)",
    )  # fmt: skip
    run.add_argument(
        "--max-cpu-percent", type=float, default=limits.max_cpu_percent,
        help="restart cleanly above this share of one core, averaged (default %(default)s)",
    )  # fmt: skip
    _add_spool_flags(commands.choices["once"], run)
    _add_install_service(commands)
    return parser


def _add_spool_flags(*commands: argparse.ArgumentParser) -> None:
    """Spool bounds and the delivery log (``once`` and ``run``); ``--collect-interval``
    (``run``)."""
    for command in commands:
        command.add_argument(
            "--spool-max-mb", type=float, default=DEFAULT_MAX_MB,
            help="fold the oldest batches into newer ones above this many MB (default"
            " %(default)s: over 72 hours at the default cadence)",
        )  # fmt: skip
        command.add_argument(
            "--spool-max-age-hours", type=float, default=DEFAULT_MAX_AGE_HOURS,
            help="fold batches older than this into newer ones (default %(default)s)",
        )  # fmt: skip
        command.add_argument(
            "--delivery-log", type=Path,
            help="append 'S <spool_id> <seq> <unix_ns>' per batch sent, 'A ...' per ack",
        )  # fmt: skip
    run = commands[-1]
    run.add_argument(
        "--collect-interval", type=float,
        help="seconds between collections instead of the plan's (time-compressed tests)",
    )  # fmt: skip


def _spool_limits(args: argparse.Namespace) -> SpoolLimits:
    """The bounds from ``--spool-max-*`` (defaults for commands without those flags)."""
    megabytes = getattr(args, "spool_max_mb", DEFAULT_MAX_MB)
    hours = getattr(args, "spool_max_age_hours", DEFAULT_MAX_AGE_HOURS)
    if megabytes <= 0 or hours <= 0:
        raise UsageError("--spool-max-mb and --spool-max-age-hours must be positive")
    return SpoolLimits(int(megabytes * 1024 * 1024), hours * 3600)


def _add_install_service(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    service = commands.add_parser(
        "install-service",
        help="install the agent as a system service (systemd), or print its definition",
        description="Print (--print) the systemd unit, launchd plist or Windows service script"
        " for running `posture-agent run` as a service, or, on Linux as root, write the unit"
        f" to {UNIT_DIR}. See docs/agent-service.md.",
    )
    service.add_argument("--print", action="store_true", help="print the definition only")
    service.add_argument("--platform", choices=PLATFORMS, help="target platform (default: this)")
    service.add_argument("--state-dir", help="the service's state directory (default per platform)")
    service.add_argument(
        "--executable",
        help="posture-agent to run (Windows: the python.exe hosting the service);"
        " default: the one beside this interpreter",
    )
    service.add_argument(
        "--unit-dir",
        type=Path,
        default=Path(UNIT_DIR),
        help=f"Linux: where the unit goes ({UNIT_DIR})",
    )
    service.add_argument("--force", action="store_true", help="replace a unit that differs")


def _facts(args: argparse.Namespace, sources: list[FactSource]) -> int:
    plan = load_plan(args.plan) if args.plan else plan_from_packs(args.policies, platform())
    if args.table:
        wanted = set(args.table)
        unknown = wanted - {table.name for table in plan.tables}
        tables = [t for t in plan.tables if t.name in wanted]
        tables += [TableRequest(name) for name in sorted(unknown)]
        plan = CollectionPlan(plan.version, plan.interval_seconds, tuple(tables))
    json.dump(collect(plan, sources).as_json(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


async def _enroll(args: argparse.Namespace, sources: list[FactSource]) -> int:
    if not args.secret:
        raise UsageError("an enroll secret is needed: --secret or POSTURE_ENROLL_SECRET")
    spool = Spool(args.state_dir / "agent.db")
    if (existing := spool.enrollment()) is not None:
        print(f"already enrolled as host {existing.host_id} with {existing.collector}")
        return 0
    identity = await asyncio.to_thread(host_identity, sources, AGENT_VERSION)
    options = EnrollOptions(
        args.collector, args.enroll_address or args.collector, args.ca_cert.resolve(),
        args.secret, args.state_dir, args.wait, max(1.0, args.retry_seconds),
    )  # fmt: skip
    try:
        enrollment, plan = await enroll_machine(options, identity)
    except TransportError as error:
        if not error.pending:
            raise
        print(f"posture-agent: {error.details}", file=sys.stderr)
        return 1
    spool.save_enrollment(enrollment, json.dumps(plan.to_dict()))
    has_certificate = ClientTls(Path(enrollment.ca_cert).parent).exists()
    mtls = " with a client certificate (mTLS)" if has_certificate else ""
    print(
        f"enrolled as host {enrollment.host_id} with {args.collector}{mtls};"
        f" state in {args.state_dir}"
    )
    return 0


def _agent(args: argparse.Namespace, sources: list[FactSource]) -> tuple[Agent, Enrollment]:
    spool = Spool(args.state_dir / "agent.db", _spool_limits(args))
    enrollment = spool.enrollment()
    if enrollment is None:
        raise UsageError(f"not enrolled (no credential in {args.state_dir}): run enroll first")
    plan = CollectionPlan.from_dict(json.loads(spool.get("plan") or "{}"))
    agent = Agent(spool, sources, plan)
    if getattr(args, "delivery_log", None):
        agent.delivery_log = DeliveryLog(args.delivery_log)
    return agent, enrollment


async def _deliver(agent: Agent, enrollment: Enrollment) -> None:
    """One session, and one more if gRPC's core fails it with INTERNAL: that status can
    stand in for the collector's own answer when the collector ends a stream while our
    write is in flight, and a second stream then hears the real one (revoked, say)."""
    try:
        await agent.session(enrollment, drain=True)
    except TransportError as error:
        if error.code is not grpc.StatusCode.INTERNAL:
            raise
        await agent.session(enrollment, drain=True)


async def _once(args: argparse.Namespace, sources: list[FactSource]) -> int:
    agent, enrollment = _agent(args, sources)
    seq = await agent.collect_once()
    try:
        await asyncio.wait_for(_deliver(agent, enrollment), timeout=args.timeout)
    except (TransportError, TimeoutError) as error:
        pending = agent.spool.pending_count()
        print(
            f"could not deliver to {enrollment.collector}: {error or 'timed out'};"
            f" {pending} batch(es) stay spooled and will be resent",
            file=sys.stderr,
        )
        if isinstance(error, TransportError) and not error.retryable:
            return 2
        return 1
    if seq == 0:
        print(
            "this collection could not be spooled (disk full); earlier batches were delivered"
            " and the next collection reports the gap",
            file=sys.stderr,
        )
        return 1
    print(f"batch {seq} delivered to {enrollment.collector} (host {enrollment.host_id})")
    return 0


async def _run(args: argparse.Namespace, sources: list[FactSource]) -> int:
    agent, enrollment = _agent(args, sources)
    agent.guard = ResourceGuard(GuardLimits(args.max_rss_mb, args.max_cpu_percent))
    if args.collect_interval is not None:
        if args.collect_interval <= 0:
            raise UsageError("--collect-interval must be positive")
        agent.collect_interval = args.collect_interval
    log.info("agent %s running for host %s", AGENT_VERSION, enrollment.host_id)
    try:
        await agent.run(enrollment)
    finally:
        agent.spool.close()
    return 0


def _restart(reason: RestartRequested) -> NoReturn:
    """Re-execute this agent in place: same PID for the service manager, fresh memory."""
    log.warning("restarting: %s", reason)
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, "-m", "agent", *sys.argv[1:]])


def _install_service(args: argparse.Namespace) -> int:
    this_platform = platform()
    target = args.platform or this_platform
    options = ("--osquery-socket", args.osquery_socket) if args.osquery_socket else ()
    service = agent_service(
        target,
        this_platform,
        state_dir=args.state_dir,
        executable=args.executable,
        agent_options=options,
    )
    local_linux = target == this_platform == "linux"
    version = local_systemd_version() if local_linux else None
    definition = render_definition(service, version, str(args.unit_dir))
    if args.print:
        sys.stdout.write(definition.text)
    elif not local_linux:
        raise UsageError(
            f"install-service writes the service only on Linux; for {target}, run"
            f" `posture-agent install-service --print --platform {target}` and follow its steps"
        )
    else:
        result = install_unit(
            definition.text, args.unit_dir, Path(service.state_dir), force=args.force
        )
        print(f"{'wrote' if result.changed else 'already up to date:'} {result.path}")
    if target != this_platform:
        print(f"# paths are the documented {target} install locations", file=sys.stderr)
    for step in definition.steps:
        print(f"# next: {step}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    needs_sources = args.command != "install-service"
    sources = default_sources(args.osquery_socket) if needs_sources else []
    try:
        if args.command == "install-service":
            return _install_service(args)
        if args.command == "facts":
            return _facts(args, sources)
        handler = {"enroll": _enroll, "once": _once, "run": _run}[args.command]
        return asyncio.run(handler(args, sources))
    except (UsageError, PlanError, ServiceError, ValueError) as error:
        print(f"posture-agent: {error}", file=sys.stderr)
        return 2
    except TransportError as error:
        print(f"posture-agent: collector refused: {error}", file=sys.stderr)
        return 2 if not error.retryable else 1
    except RestartRequested as reason:
        _restart(reason)
    except KeyboardInterrupt:
        return 130
