"""``posture-agent``: a thin command line over the agent's modules.

Exit codes: 0 success, 1 the work could not finish (collector unreachable: data stays
spooled), 2 usage or configuration errors (bad plan, not enrolled, refused credential).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from agent.collect import collect
from agent.guard import GuardLimits
from agent.plan import CollectionPlan, PlanError, load_plan, plan_from_packs
from agent.service.model import PLATFORMS, ServiceError
from agent.service.systemd import UNIT_DIR
from agent.sources import default_sources, platform
from agent.sources.base import FactSource, TableRequest
from agent.spool import DEFAULT_MAX_AGE_HOURS, DEFAULT_MAX_MB, SpoolLimits

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


def spool_limits(args: argparse.Namespace) -> SpoolLimits:
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


def _install_service(args: argparse.Namespace) -> int:
    from agent.service import agent_service, render_definition
    from agent.service.install import install_unit
    from agent.service.systemd import local_systemd_version

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
    try:
        if args.command == "install-service":
            return _install_service(args)
        sources = default_sources(args.osquery_socket)
        if args.command == "facts":
            return _facts(args, sources)
        from agent.online import run_online  # gRPC, TLS: only for commands that talk

        return run_online(args, sources)
    except (UsageError, PlanError, ServiceError, ValueError) as error:
        print(f"posture-agent: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
