"""mTLS, revocation, renewal and re-enrollment approval end to end: a real ``posture-collector
serve --mtls`` process, real ``posture-agent`` processes and the real CLI, on 127.0.0.1.

Two agent state directories on this machine are two agents with the same hardware identity:
exactly a reinstalled laptop, or a cloned one.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.identity import ClientTls
from agent.transport import open_channel
from collector.tls import LocalPki, fingerprint
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc
from tests.conftest import AgentProcess, Collector

pytestmark = pytest.mark.integration

#: Short enough for a test, long enough that a `posture-agent once` finishes within it.
AGE = ["--max-connection-age", "3s", "--max-connection-age-grace", "1s"]


class MtlsCollector(Collector):
    enroll_address: str = ""

    def start(self) -> str:
        address = super().start()
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert "enrollment on" in line, line
        self.enroll_address = line.rsplit(" ", 1)[1].strip()
        return address


def _collector(tmp_path: Path, pki: LocalPki, *flags: str) -> Iterator[MtlsCollector]:
    server = MtlsCollector(
        db=tmp_path / "collector.db",
        pki=pki,
        extra=["--mtls", "--tls-dir", str(pki.ca_cert.parent), "--enroll-listen",
               "127.0.0.1:0", *flags],
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mtls_collector(tmp_path: Path, pki: LocalPki) -> Iterator[MtlsCollector]:
    # Deny-list reloads are rare here, so only the connection age can cut an idle stream.
    yield from _collector(tmp_path, pki, *AGE, "--revocation-check", "1h")


def _enroll(collector: MtlsCollector, agent: AgentProcess, secret: str) -> Any:
    return agent.run(
        "enroll", "--collector", collector.address, "--enroll-address",
        collector.enroll_address, "--ca-cert", str(collector.pki.ca_cert), "--secret", secret,
    )  # fmt: skip


def _stored(db: Path, host_id: int) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT COUNT(*) FROM batches WHERE host_id = ?", (host_id,))
        return int(row.fetchone()[0])


def _certificates(db: Path) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT fingerprint, host_id, revoked_at FROM client_certificates ORDER BY issued_at"
        ).fetchall()
    return [(str(a), int(b), c) for a, b, c in rows]


async def _hold_stream_until_cut(agent: AgentProcess, address: str, revoke: Any) -> grpc.StatusCode:
    """Open a stream with the agent's own certificate, revoke the host, and wait (idle, no
    message sent) until the collector ends it."""
    async with open_channel(address, agent.state_dir / "tls" / "ca.pem") as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await call.write(pb.AgentMessage(hello=pb.Hello(plan_version="old")))
        assert (await call.read()).WhichOneof("message") == "plan"
        await asyncio.to_thread(revoke)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            # 60 s guards against a hang; the connection age (3 s + 1 s) is what ends it.
            await asyncio.wait_for(_read_forever(call), timeout=60)
        return caught.value.code()


async def _read_forever(call: Any) -> None:
    while True:
        await call.read()


def test_mtls_enroll_stream_revoke_cuts_the_open_stream_and_refuses_the_agent(
    mtls_collector: MtlsCollector, agent: AgentProcess
) -> None:
    secret = mtls_collector.enroll_secret()
    enrolled = _enroll(mtls_collector, agent, secret)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled as host 1" in enrolled.stdout and "(mTLS)" in enrolled.stdout
    tls = ClientTls(agent.state_dir / "tls")
    certificate, _ = tls.load()
    assert _certificates(mtls_collector.db) == [(fingerprint(certificate), 1, None)]
    once = agent.run("once")
    assert once.returncode == 0, once.stderr
    assert _stored(mtls_collector.db, 1) == 1

    def revoke() -> None:
        result = mtls_collector.cli("credential", "revoke", "1", "--user", "alice")
        assert "and 1 client certificate(s) of host 1" in result.stdout

    code = asyncio.run(_hold_stream_until_cut(agent, mtls_collector.address, revoke))
    assert code == grpc.StatusCode.UNAVAILABLE  # the connection reached its maximum age
    refused = agent.run("once")
    assert refused.returncode == 2, refused.stderr
    assert "client certificate of host 1 is revoked (revoked by alice)" in refused.stderr
    assert _stored(mtls_collector.db, 1) == 1
    with sqlite3.connect(mtls_collector.db) as conn:
        audited = conn.execute("SELECT actor, action, target FROM audit_log").fetchall()
    assert ("alice", "credential.revoke", "host:1") in audited


def test_without_mtls_material_the_main_listener_refuses_and_enroll_is_separate(
    mtls_collector: MtlsCollector, agent: AgentProcess
) -> None:
    secret = mtls_collector.enroll_secret()
    # Enrolling on the main listener fails in the handshake: it requires a certificate.
    wrong_port = agent.run(
        "enroll", "--collector", mtls_collector.address, "--ca-cert",
        str(mtls_collector.pki.ca_cert), "--secret", secret,
    )  # fmt: skip
    assert wrong_port.returncode == 1, wrong_port.stderr
    assert "UNAVAILABLE" in wrong_port.stderr
    assert _enroll(mtls_collector, agent, secret).returncode == 0


def test_the_agent_renews_its_certificate_and_keeps_reporting(
    tmp_path: Path, pki: LocalPki, agent: AgentProcess
) -> None:
    # A 2-minute certificate, backdated 5 minutes for clock skew, is past 2/3 of its life
    # from the start: every stream renews it.
    for collector in _collector(tmp_path, pki, "--client-cert-lifetime", "2m"):
        assert _enroll(collector, agent, collector.enroll_secret()).returncode == 0
        tls = ClientTls(agent.state_dir / "tls")
        first = fingerprint(tls.load()[0])
        assert agent.run("once").returncode == 0
        second = fingerprint(tls.load()[0])
        assert second != first
        assert [row[0] for row in _certificates(collector.db)] == [first, second]
        once = agent.run("once")
        assert once.returncode == 0, once.stderr
        assert fingerprint(tls.load()[0]) not in (first, second)
        assert _stored(collector.db, 1) == 2


def test_reenrollment_needs_approval_and_the_approved_agent_takes_the_host_over(
    mtls_collector: MtlsCollector, tmp_path: Path
) -> None:
    original, reinstall, clone = (AgentProcess(tmp_path / name) for name in ("a", "b", "c"))
    secret = mtls_collector.enroll_secret()
    assert _enroll(mtls_collector, original, secret).returncode == 0
    assert original.run("once").returncode == 0

    for agent in (reinstall, clone):
        pending = _enroll(mtls_collector, agent, secret)
        assert pending.returncode == 1, pending.stderr
        assert "waits for an administrator" in pending.stderr
    listed = json.loads(mtls_collector.cli("enrollment", "pending", "--format", "json").stdout)
    assert [(r["id"], r["host_id"], r["state"]) for r in listed] == [
        (1, 1, "pending"), (2, 1, "pending"),
    ]  # fmt: skip
    assert original.run("once").returncode == 0  # pending requests change nothing

    mtls_collector.cli("enrollment", "deny", "2", "--reason", "cloned VM", "--user", "alice")
    denied = _enroll(mtls_collector, clone, secret)
    assert denied.returncode == 2 and "denied by alice: cloned VM" in denied.stderr
    approve = mtls_collector.cli("enrollment", "approve", "1", "--user", "alice")
    assert "approved" in approve.stdout

    cut_off = original.run("once")
    assert cut_off.returncode == 2 and "revoked" in cut_off.stderr
    taken = _enroll(mtls_collector, reinstall, secret)
    assert taken.returncode == 0, taken.stderr
    assert "enrolled as host 1" in taken.stdout
    delivered = reinstall.run("once")
    assert delivered.returncode == 0, delivered.stderr
    hosts = json.loads(mtls_collector.cli("hosts", "--format", "json").stdout)
    assert [h["host"]["id"] for h in hosts] == [1]
    assert _stored(mtls_collector.db, 1) >= 2  # one host, one history, both agents' batches


def test_expired_and_used_up_secrets_are_refused_to_a_real_agent(
    mtls_collector: MtlsCollector, tmp_path: Path
) -> None:
    once = mtls_collector.cli("enroll-secret", "create", "once", "--max-uses", "1").stdout.strip()
    first, second = AgentProcess(tmp_path / "first"), AgentProcess(tmp_path / "second")
    assert _enroll(mtls_collector, first, once).returncode == 0
    # The same identity again would be a re-enrollment: use up the secret on the count.
    used_up = _enroll(mtls_collector, second, once)
    assert used_up.returncode == 2
    assert "enroll secret 'once' has been used 1 of 1 times" in used_up.stderr

    week = mtls_collector.cli("enroll-secret", "create", "week", "--expires-in", "7d")
    with sqlite3.connect(mtls_collector.db) as conn:  # as if the week had passed
        conn.execute("UPDATE enroll_secrets SET expires_at = '2020-01-08T00:00:00+00:00'")
    expired = _enroll(mtls_collector, second, week.stdout.strip())
    assert expired.returncode == 2
    assert "enroll secret 'week' expired at 2020-01-08T00:00:00+00:00" in expired.stderr
    listed = mtls_collector.cli("enroll-secret", "list").stdout
    assert [line.split()[1:3] for line in listed.splitlines()] == [
        ["once", "expired"], ["week", "expired"],
    ]  # fmt: skip
