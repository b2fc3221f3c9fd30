"""Two real ``posture-collector serve`` processes sharing one PostgreSQL, a real agent.

Both collectors listen on one port (``SO_REUSEPORT``, on by default in gRPC on Linux: the
kernel spreads connections over them, as a TCP load balancer would). The agent's daemon
streams to whichever the kernel chose; that one is killed with SIGKILL mid-run, the agent
reconnects to the survivor, and afterwards every batch the agent dropped from its spool
(acknowledged) is stored exactly once. With both collectors up, the webhook outbox and the
daily retention run once across the pair, not once per collector.

Skipped, with the reason, when no PostgreSQL server can be started here.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
import pytest

from collector.model import FactBatch, HostIdentity, TableFacts
from collector.store import open_store
from collector.tls import LocalPki

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
POLICIES = ROOT / "policies"
WEBHOOK_SECRET = "0123456789abcdef-cluster-secret"


@dataclass
class ClusterCollector:
    """One ``serve`` process on the shared database."""

    url: str
    pki: LocalPki
    log_path: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    _log: IO[bytes] | None = None

    def start(self, port: int = 0) -> int:
        command = [
            sys.executable, "-m", "collector", "serve", "--db", self.url,
            "--listen", f"127.0.0.1:{port}", "--tls-cert", str(self.pki.server_cert),
            "--tls-key", str(self.pki.server_key), "--policies", str(POLICIES),
            "--interval", "1", *self.extra,
        ]  # fmt: skip
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert "listening on" in line, self.log_path.read_text()
        self.port = int(line.rsplit(":", 1)[1])
        return self.port

    def holds_stream(self) -> bool:
        """Has an established connection on the shared port (the agent's stream)."""
        assert self.process is not None
        connections = psutil.Process(self.process.pid).net_connections(kind="tcp")
        return any(
            c.status == psutil.CONN_ESTABLISHED and c.laddr.port == self.port for c in connections
        )

    def kill(self) -> None:
        assert self.process is not None and self._log is not None
        self.process.kill()
        self.process.wait(timeout=30)
        self._close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
def cluster(
    postgres: Any, pki: LocalPki, tmp_path: Path, receiver: Any
) -> Iterator[list[ClusterCollector]]:
    url = postgres.database()
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(WEBHOOK_SECRET)
    extra = ["--webhook-url", receiver.url, "--webhook-secret-file", str(secret_file),
             "--retention-days", "30"]  # fmt: skip
    collectors = [
        ClusterCollector(url, pki, tmp_path / f"collector-{name}.log", list(extra))
        for name in ("a", "b")
    ]
    port = collectors[0].start()
    collectors[1].start(port)  # the same port: the kernel balances between them
    yield collectors
    for collector in collectors:
        collector.stop()


def _cli(url: str, *args: str) -> str:
    command = [sys.executable, "-m", "collector", *args, "--db", url, "--policies", str(POLICIES)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _stored(url: str) -> tuple[list[int], int]:
    """(stored seqs of host 1, fact history rows recorded per distinct seq, max)."""
    with psycopg.connect(url, autocommit=True) as conn:
        seqs = [seq for (seq,) in conn.execute("SELECT seq FROM batches ORDER BY seq")]
        row = conn.execute(
            "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM fact_history"
            " GROUP BY host_id, view, seq, identity_json) AS per_change"
        ).fetchone()
    return seqs, int(row[0]) if row else 0


def _agent_state(state_dir: Path) -> tuple[int, list[int]]:
    with sqlite3.connect(state_dir / "agent.db") as conn:
        last = conn.execute("SELECT value FROM state WHERE key = 'last_seq'").fetchone()
        pending = [seq for (seq,) in conn.execute("SELECT seq FROM batches ORDER BY seq")]
    return int(last[0]), pending


def _stream_holder(cluster: list[ClusterCollector], timeout: float = 90) -> ClusterCollector:
    """The collector holding the agent's connection (the agent reconnects between
    collections, so ask until one does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for collector in cluster:
            if collector.holds_stream():
                return collector
        time.sleep(0.05)
    raise AssertionError("no collector holds the agent's stream")


def _wait(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_killing_the_collector_an_agent_streams_to_loses_and_duplicates_nothing(
    cluster: list[ClusterCollector], agent: Any, pki: LocalPki
) -> None:
    url = cluster[0].url
    secret = _cli(url, "enroll-secret", "create", "cluster").strip()
    address = f"127.0.0.1:{cluster[0].port}"
    enrolled = agent.run("enroll", "--collector", address, "--ca-cert", str(pki.ca_cert),
                         "--secret", secret)  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    daemon = agent.start("run")
    try:
        _wait(lambda: len(_stored(url)[0]) >= 3, "three batches through the first collector")
        serving = _stream_holder(cluster)
        survivor = next(c for c in cluster if c is not serving)
        before = len(_stored(url)[0])
        serving.kill()
        _wait(lambda: len(_stored(url)[0]) >= before + 3, "three batches through the survivor")
        _wait(survivor.holds_stream, "the stream on the survivor")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    last_seq, pending = _agent_state(agent.state_dir)
    stored, most_per_change = _stored(url)
    assert stored == sorted(set(stored)), "a batch was stored twice"
    acknowledged = set(range(1, last_seq + 1)) - set(pending)
    assert acknowledged <= set(stored), "an acknowledged batch is missing"
    assert most_per_change == 1, "a fact change was recorded twice"
    host = _cli(url, "host", "1", "--format", "json")
    assert '"results"' in host


def test_background_jobs_run_once_with_two_collectors_up(
    cluster: list[ClusterCollector], receiver: Any
) -> None:
    url = cluster[0].url
    store = open_store(url)
    try:
        _raise_drift(store, events=5)
        _wait(lambda: len(receiver.event_ids) >= 5, "five webhook deliveries")
        time.sleep(6)  # a further poll of both notifiers: nothing is delivered again
        assert sorted(receiver.event_ids) == sorted(set(receiver.event_ids))
        assert len(receiver.event_ids) == 5
        retention = store.lease("retention")
        assert retention is not None and retention.runs == 1
        notify = store.lease("notify")
        assert notify is not None and notify.runs == 1  # one holder all along
    finally:
        store.close()


def _raise_drift(store: Any, events: int) -> None:
    """Configuration drift on a host, queued for the webhook as a collector would."""
    store.notify_events = True
    now = datetime.now(UTC)
    secret = store.create_enroll_secret("drift", "drift-hash", now)
    identity = HostIdentity("UUID-D", "SN-D", "drifter", "linux", "Debian 12", "0.1.0")
    host = store.create_host(identity, "drift-cred", secret, 300, now)
    users = [{"uid": "0", "gid": "0", "username": "root"}]
    for seq in range(1, events + 2):
        batch = FactBatch(seq, now, [TableFacts("users", list(users))], {"users": str(seq)})
        store.apply_batch(host.id, batch, now)
        users.append({"uid": str(1000 + seq), "gid": "100", "username": f"user{seq}"})
