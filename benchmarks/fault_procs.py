"""The real processes the fault harness kills: collectors and agents on loopback.

Each agent has its own state directory (spool), its own churning osqueryd socket
(``benchmarks.fault_osquery``) and appends to a delivery log (``--delivery-log``) every batch
it sends and every ack it receives. Kills are ``SIGKILL``: no cleanup, as a crash or a power
cut would leave things. A collector restarts on the port it first bound.

Several collectors form a cluster (``Cluster``): one database location (a PostgreSQL URL),
one TLS identity and one port, which they share through ``SO_REUSEPORT`` (gRPC's default on
Linux) so the kernel spreads the agents' connections over whichever are up, as a TCP load
balancer would. The first to start binds a free port; every later start, of any member,
reuses it.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.common import POLICIES, ROOT
from collector.tls import LocalPki, ensure_local_pki

__all__ = ["AgentProc", "Cluster", "CollectorProc", "spool_state"]


@dataclass
class CollectorProc:
    """``posture-collector serve`` with TLS; ``kill`` is kill -9, ``start`` reuses the port.

    ``location`` is its database (a path or a ``postgresql://`` URL; default
    ``collector.db`` in ``workdir``); ``name`` names its log, ``<name>.log`` in ``workdir``.
    """

    workdir: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    pki: LocalPki | None = None
    location: str | None = None
    name: str = "collector"

    @property
    def db(self) -> str:
        return self.location or str(self.workdir / "collector.db")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        self.pki = self.pki or ensure_local_pki(self.workdir / "tls")
        command = [
            sys.executable, "-m", "collector", "serve", "--db", self.db,
            "--listen", self.address, "--tls-cert", str(self.pki.server_cert),
            "--tls-key", str(self.pki.server_key), "--policies", str(POLICIES), *self.extra,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "listening on" not in line:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process.stdout.close()
            self.process = None
            raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
        self.port = int(line.rsplit(":", 1)[1])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def died(self) -> int | None:
        """The exit status of a process that ended on its own (not killed by us), else None."""
        return None if self.process is None else self.process.poll()

    def holds_stream(self) -> bool:
        """Whether an agent's connection is established to it right now (its stream)."""
        if not self.alive():
            return False
        assert self.process is not None
        try:
            connections = psutil.Process(self.process.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(
            c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
            for c in connections
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self._reap()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait(timeout=60)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "collector", *args, "--db", self.db,
                   "--policies", str(POLICIES)]  # fmt: skip
        return subprocess.run(
            command, capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
        ).stdout


@dataclass
class Cluster:
    """``size`` collectors on one database and one port (see the module docstring).

    With one member it is the single collector the harness always ran (``collector.log``);
    with more, the members are ``collector-0``, ``collector-1``... and share ``tls/``.
    """

    workdir: Path
    location: str | None = None
    size: int = 1
    members: list[CollectorProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = ["collector"] if self.size == 1 else [f"collector-{i}" for i in range(self.size)]
        self.members = [CollectorProc(self.workdir, location=self.location, name=name)
                        for name in names]  # fmt: skip

    @property
    def first(self) -> CollectorProc:
        """The member whose CLI, TLS identity and address the agents are given."""
        return self.members[0]

    @property
    def port(self) -> int:
        return max(member.port for member in self.members)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, member: CollectorProc) -> None:
        """Start ``member`` on the cluster's port (a free one if none was bound yet)."""
        member.pki = member.pki or ensure_local_pki(self.workdir / "tls")
        member.port = self.port
        member.start()

    def start_down(self) -> None:
        """Start every member that is not running."""
        for member in self.members:
            if not member.alive():
                self.start(member)

    def up(self) -> list[CollectorProc]:
        return [member for member in self.members if member.alive()]

    def kill_all(self) -> int:
        """Kill -9 every running member; returns how many were running."""
        running = self.up()
        for member in running:
            member.kill()
        return len(running)

    def stop_all(self) -> None:
        for member in self.members:
            member.stop()

    def log_text(self) -> str:
        return "".join(
            m.log_path.read_text(errors="replace") for m in self.members if m.log_path.exists()
        )


@dataclass
class AgentProc:
    """One ``posture-agent`` with its own state directory and osqueryd socket."""

    index: int
    home: Path
    socket: str
    process: subprocess.Popen[bytes] | None = None
    #: How the running process was started, to start it again the same way.
    started_with: tuple[tuple[str, ...], str, int | None] = ((), "agent", None)

    @property
    def name(self) -> str:
        return f"agent-{self.index}"

    @property
    def spool(self) -> Path:
        return self.home / "state" / "agent.db"

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agent", "--osquery-socket", self.socket, *args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "POSTURE_AGENT_STATE_DIR": str(self.home / "state")}

    def enroll(self, collector: str, ca_cert: Path, secret: str) -> subprocess.Popen[bytes]:
        command = self._command(
            "enroll", "--collector", collector, "--ca-cert", str(ca_cert), "--secret", secret
        )
        with (self.home / "agent.log").open("ab") as log:
            return subprocess.Popen(command, env=self._env(), stdout=log, stderr=log, cwd=ROOT)

    def start(
        self, *args: str, log_name: str = "agent", file_size_limit: int | None = None
    ) -> None:
        """``run`` with ``args``; ``file_size_limit`` (bytes) is RLIMIT_FSIZE: a full disk."""
        self.started_with = (args, log_name, file_size_limit)
        preexec: Callable[[], None] | None = None
        if file_size_limit is not None:
            limit = file_size_limit

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        delivery = self.home / f"delivery-{log_name}.log"
        command = self._command("run", "--delivery-log", str(delivery), *args)
        with (self.home / f"{log_name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self._env(), stdout=log, stderr=log, cwd=ROOT, preexec_fn=preexec
            )

    def once(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        delivery = self.home / "delivery-final.log"
        command = self._command("once", "--timeout", str(timeout), "--delivery-log", str(delivery))
        return subprocess.run(
            command, env=self._env(), capture_output=True, text=True, cwd=ROOT, timeout=timeout + 30
        )

    def died(self) -> int | None:
        """The exit status of a process that ended on its own (not killed by us), else None."""
        return None if self.process is None else self.process.poll()

    def restart(self) -> None:
        args, log_name, limit = self.started_with
        self.process = None
        self.start(*args, log_name=log_name, file_size_limit=limit)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=60)
            self.process = None

    def log_text(self, log_name: str = "agent") -> str:
        path = self.home / f"{log_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def spool_state(path: Path) -> tuple[str, int, int, int]:
    """(spool_id, last seq, batches pending, oldest pending seq or 0) of an agent's spool,
    read from outside."""
    for _ in range(50):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                state = dict(conn.execute("SELECT key, value FROM state").fetchall())
                pending, oldest = conn.execute("SELECT COUNT(*), MIN(seq) FROM batches").fetchone()
            finally:
                conn.close()
            last = int(state.get("last_seq", 0))
            return state.get("spool_id", ""), last, int(pending), int(oldest or 0)
        except sqlite3.DatabaseError:  # mid-restart: WAL recovery, or a spool being moved aside
            time.sleep(0.1)
    raise RuntimeError(f"cannot read spool {path}")
