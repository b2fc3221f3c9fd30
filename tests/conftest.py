"""Shared fixtures: real collector and agent processes on loopback with real TLS."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest

from collector.tls import LocalPki, ensure_local_pki

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


def _load_postgres_fixture() -> Any:
    """``tests/postgres_fixture.py``, loaded once: tests are not a package and
    ``--import-mode=importlib`` puts nothing on ``sys.path``, and every test that needs
    PostgreSQL must share the session's one private server."""
    spec = importlib.util.spec_from_file_location(
        "posture_tests_postgres", ROOT / "tests" / "postgres_fixture.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_postgres_support = _load_postgres_fixture()
postgres = _postgres_support.postgres


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which store engines ran: PostgreSQL cases skip when no server can start."""
    terminalreporter.write_line(_postgres_support.describe())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return ensure_local_pki(tmp_path_factory.mktemp("tls"))


@dataclass
class Collector:
    """A real ``posture-collector serve`` process on 127.0.0.1."""

    db: Path
    pki: LocalPki
    interval: int = 300
    extra: list[str] = field(default_factory=list)
    #: Serve the dashboard and JSON API too (on any free port; ``web_url`` tells which).
    web: bool = False
    process: subprocess.Popen[bytes] | None = None
    address: str = ""
    port: int = 0
    web_url: str = ""
    _log: IO[bytes] | None = None

    def start(self) -> str:
        listen = f"127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "collector", "serve", "--db", str(self.db),
            "--listen", listen, "--tls-cert", str(self.pki.server_cert),
            "--tls-key", str(self.pki.server_key), "--policies", str(POLICIES),
            "--interval", str(self.interval), *self.extra,
        ]  # fmt: skip
        if self.web:
            command += ["--http-listen", "127.0.0.1:0"]
        self._log = (self.db.parent / "collector.log").open("ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert "listening on" in line, (self.db.parent / "collector.log").read_text()
        self.address = line.rsplit(" ", 1)[1].strip()
        self.port = int(self.address.rsplit(":", 1)[1])  # a restart reuses the port
        while self.web and "dashboard on" not in line:
            line = self.process.stdout.readline().decode()
            assert line, (self.db.parent / "collector.log").read_text()
        if self.web:
            self.web_url = line.rsplit(" ", 1)[1].strip()
        return self.address

    def kill(self) -> None:
        """kill -9: no grace, no cleanup, as a crash or power cut would."""
        assert self.process is not None
        self.process.kill()
        self._reap()

    def _reap(self) -> None:
        assert self.process is not None and self._log is not None
        self.process.wait(timeout=30)
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self._reap()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "collector", *args, "--db", str(self.db),
                   "--policies", str(POLICIES)]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)

    def enroll_secret(self, name: str = "test") -> str:
        return self.cli("enroll-secret", "create", name).stdout.strip()


@pytest.fixture
def collector(tmp_path: Path, pki: LocalPki) -> Iterator[Collector]:
    server = Collector(db=tmp_path / "collector.db", pki=pki)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def web_collector(tmp_path: Path, pki: LocalPki) -> Iterator[Collector]:
    """A collector that also serves the dashboard and JSON API (``web_url``)."""
    server = Collector(db=tmp_path / "collector.db", pki=pki, web=True)
    server.start()
    yield server
    server.stop()


@dataclass
class AgentProcess:
    """Runs ``posture-agent`` commands as real processes with their own state dir."""

    state_dir: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "POSTURE_AGENT_STATE_DIR": str(self.state_dir)}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "agent", *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=self.env(), timeout=timeout
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.state_dir.parent / "agent.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "agent", *args], env=self.env(), stdout=log, stderr=log
            )


@pytest.fixture
def agent(tmp_path: Path) -> AgentProcess:
    return AgentProcess(tmp_path / "agent")


@dataclass
class InProcessCollector:
    """A real grpc.aio collector server with TLS on 127.0.0.1, inside the test's event loop."""

    service: Any
    channel: Any
    stub: Any
    address: str
    secret: str
    worker: ThreadPoolExecutor

    async def settled(self) -> None:
        """Wait until the store's one writer thread has finished what it started: an ack
        follows its batch's commit but precedes the batch's evaluation, and a test then
        uses the same store connection from the event loop's thread."""
        await asyncio.get_running_loop().run_in_executor(self.worker, lambda: None)


@pytest.fixture
async def serving(tmp_path: Path, pki: LocalPki) -> AsyncIterator[InProcessCollector]:
    import grpc
    from grpc_health.v1 import health_pb2

    from collector.policy.loader import load_packs
    from collector.service import PostureService
    from collector.store import SqliteStore
    from collector.transport.server import ServerConfig, build_server
    from protos.posture.v1 import agent_pb2_grpc

    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(POLICIES))
    worker = ThreadPoolExecutor(max_workers=1)
    config = ServerConfig("127.0.0.1:0", pki.server_cert, pki.server_key, 1024 * 1024)
    server, port, health = build_server(service, worker, config)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.secure_channel(
        address, grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    )
    _, secret = service.create_enroll_secret("test")
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    yield InProcessCollector(service, channel, stub, address, secret, worker)
    await channel.close()
    await server.stop(None)
    worker.shutdown()
    service.close()
    store.close()


@dataclass
class Receiver:
    """A real webhook receiver: records each POST (headers, body, status it answered) and
    answers with ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    url: str = ""

    @property
    def event_ids(self) -> list[str]:
        """The events it accepted (answered 200), in order."""
        return [headers["X-Posture-Event"] for headers, _, status in self.accepted()]

    def accepted(self) -> list[tuple[dict[str, str], bytes, int]]:
        return [post for post in self.received if post[2] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (``url``)."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state.statuses.pop(0) if state.statuses else 200
            state.received.append((dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/posture"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()
