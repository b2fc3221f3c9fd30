"""``posture-collector quickstart``: the whole product on one machine, end to end.

Starts a real collector (TLS with a local CA, the embedded SQLite store, the dashboard on
loopback), enrolls this machine's agent with a fresh enroll secret, sends one collection,
prints the machine's score and failing checks, writes the reports, and then either keeps
the collector and dashboard up until Ctrl-C (in a terminal, so a person can look) or stops
(in CI). Every step is the same command a deployment would run, so the quickstart is also a
smoke test.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.access import Role
from collector.accounts import AccessControl
from collector.policy.loader import load_packs
from collector.policy.model import Status
from collector.reporting import ReportRequest, issue_report
from collector.service import HostView, PostureService
from collector.store import SqliteStore
from collector.tls import ensure_local_pki

__all__ = ["run_quickstart"]

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"
QUICKSTART_ADMIN = "admin"


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


@dataclass(frozen=True)
class _Running:
    address: str
    dashboard: str
    process: subprocess.Popen[bytes]


def _announced(process: subprocess.Popen[bytes], what: str, log: Path) -> str:
    """The address the collector prints on the line announcing ``what``."""
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode()
        if what in line:
            return line.rsplit(" ", 1)[1].strip()
    process.wait(timeout=10)
    raise RuntimeError(f"the collector did not start (exit {process.returncode}); see {log}")


@contextmanager
def _collector(directory: Path, port: int, http_port: int) -> Iterator[_Running]:
    """A running ``posture-collector serve`` with its dashboard."""
    log = (directory / "collector.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "serve",
            "--db",
            str(directory / "collector.db"),
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-dir",
            str(directory / "tls"),
            "--http-listen",
            f"127.0.0.1:{http_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        address = _announced(process, "listening on", directory / "collector.log")
        dashboard = _announced(process, "dashboard on", directory / "collector.log")
        yield _Running(address, dashboard, process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        log.close()


def _agent(directory: Path, *args: str) -> None:
    env = {**os.environ, "POSTURE_AGENT_STATE_DIR": str(directory / "agent")}
    command = [sys.executable, "-m", "agent", *args]
    with (directory / "agent.log").open("ab") as log:
        completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=log)
    if completed.returncode != 0:
        raise RuntimeError(
            f"posture-agent {args[0]} failed (exit {completed.returncode});"
            f" see {directory / 'agent.log'}"
        )
    print("    " + completed.stdout.decode().strip(), flush=True)


def _summary(service: PostureService, view: HostView) -> None:
    score = view.score
    percent = "n/a" if score.percent is None else f"{score.percent:.1f}%"
    identity = view.host.identity
    print(f"\nThis machine: {identity.hostname} ({identity.os_version}), host {view.host.id}")
    print(
        f"  compliance score {percent}  (pass {score.passed}, fail {score.failed},"
        f" error {score.errors}, not applicable {score.notapplicable}, unknown {score.unknown})"
    )
    failing = sorted(
        (r for r in view.results if r.status in (Status.FAIL, Status.ERROR)),
        key=lambda r: (-service.checks[r.check_id].severity.weight, r.status, r.check_id),
    )
    if failing:
        print("  checks to fix, most severe first:")
    for result in failing:
        check = service.checks[result.check_id]
        reason = f": {result.reason}" if result.status is Status.ERROR else ""
        print(
            f"    {result.status.value.upper():<5} {check.severity.value:<8} {check.title}{reason}"
        )


def run_quickstart(directory: Path, port: int, http_port: int, keep_serving: bool) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "collector.db"
    packs = load_packs(REPO_POLICIES)
    _step(f"policy packs: {', '.join(f'{p.name} {p.version}' for p in packs)}")
    pki = ensure_local_pki(directory / "tls")
    store = SqliteStore(database)
    service = PostureService(store, packs)
    _, secret = service.create_enroll_secret(f"quickstart-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    with _collector(directory, port, http_port) as running:
        _step(f"collector on {running.address} (TLS, CA {pki.ca_cert}), database {database}")
        _step("enrolling this machine's agent")
        _agent(
            directory,
            "enroll",
            "--collector",
            running.address,
            "--ca-cert",
            str(pki.ca_cert),
            "--secret",
            secret,
        )
        _step("collecting facts and streaming them to the collector")
        _agent(directory, "once")
        host = service.store.list_hosts()[-1]
        _summary(service, service.host_view(host))
        _write_reports(service, directory / "reports")
        print(f"More: posture-collector host {host.id} --db {database}")
        login = _dashboard_login(service, directory)
        print(f"\nDashboard: {running.dashboard}  (sign in as {login})")
        if keep_serving:
            print("The collector and dashboard stay up until Ctrl-C.", flush=True)
            _wait_for_interrupt(running.process)
    service.close()
    store.close()
    return 0


def _dashboard_login(service: PostureService, directory: Path) -> str:
    """An admin for the person running the quickstart; the password is kept in a 0600 file
    beside the database, never printed (terminals are logged and screens shared)."""
    password_file = directory / "admin-password"
    access = AccessControl(service.store, service.clock)
    if access.store.user_by_name(QUICKSTART_ADMIN) is None or not password_file.exists():
        password = secrets.token_urlsafe(18)
        with service.audit.recording("quickstart", "user.add", f"user:{QUICKSTART_ADMIN}"):
            if access.store.user_by_name(QUICKSTART_ADMIN) is None:
                access.add_user(QUICKSTART_ADMIN, Role.ADMIN, password, "quickstart")
            else:
                access.set_password(QUICKSTART_ADMIN, password)
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
    return f"{QUICKSTART_ADMIN!r}, password in {password_file}"


def _write_reports(service: PostureService, reports: Path) -> None:
    reports.mkdir(exist_ok=True)
    content = ""
    for fmt, suffix in (("table", "txt"), ("json", "json"), ("csv", "csv"), ("html", "html")):
        issued = issue_report(service, ReportRequest(fmt=fmt, user="quickstart"))
        (reports / f"report.{suffix}").write_bytes(issued.data)
        content = issued.report.content_sha256
    print(f"\nReports: {reports}/report.txt, .json, .csv, .html (content sha256 {content})")


def _wait_for_interrupt(process: subprocess.Popen[bytes]) -> None:
    """Until Ctrl-C (which the collector, in the same process group, gets too) or its exit."""
    try:
        process.wait()
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
