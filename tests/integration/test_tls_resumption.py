"""TLS session resumption under mTLS: a real grpc.aio collector on 127.0.0.1 (main listener
requiring client certificates, enrollment listener), real SQLite, the agent's own enrollment
and transport code.

What is asserted is what the collector observes: whether a stream's TLS session was resumed
(``posture_stream_tls_sessions``, from gRPC's ``ssl_session_reused``) and which certificate
it authenticated, never a timing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from agent.enroll import EnrollOptions, enroll_machine
from agent.identity import ClientTls
from agent.spool import Enrollment
from agent.transport import (
    AgentStream,
    PlanUpdate,
    TlsSessions,
    TransportError,
    open_channel,
    renew_certificate,
)
from collector.metrics import CollectorMetrics
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.tls import ClientCa, LocalPki, fingerprint
from collector.transport.server import ServerConfig, build

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


class Clock:
    """The collector's clock: real time, moved forward by ``skip``."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def skip(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class Served:
    service: PostureService
    metrics: CollectorMetrics
    clock: Clock
    db: Path
    #: ``localhost:PORT``: gRPC sends a server name (and so resumes) only for a host name.
    address: str
    enroll_address: str
    ca_cert: Path
    secret: str

    def sessions(self) -> dict[str, float]:
        """Streams so far by TLS session, as the collector counted them."""
        counts = {"resumed": 0.0, "full": 0.0}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "posture_stream_tls_sessions_total":
                    counts[sample.labels["session"]] = sample.value
        return counts


def _mtls_config(pki: LocalPki) -> ServerConfig:
    """A collector on 127.0.0.1 asking agents for client certificates."""
    return ServerConfig(
        "127.0.0.1:0",
        pki.server_cert,
        pki.server_key,
        mtls=True,
        enroll_listen="127.0.0.1:0",
        client_ca=ClientCa.from_dir(pki.ca_cert.parent),
    )


@pytest.fixture
async def served(tmp_path: Path, pki: LocalPki) -> AsyncIterator[Served]:
    store = SqliteStore(tmp_path / "collector.db")
    clock = Clock()
    service = PostureService(store, load_packs(ROOT / "policies"), clock=clock)
    metrics = CollectorMetrics()
    worker = ThreadPoolExecutor(max_workers=1)
    config = _mtls_config(pki)
    built = build(service, worker, config, metrics)
    await built.server.start()
    _, secret = service.create_enroll_secret("resumption")
    yield Served(
        service,
        metrics,
        clock,
        tmp_path / "collector.db",
        f"localhost:{built.port}",
        f"localhost:{built.enroll_port}",
        pki.ca_cert,
        secret,
    )
    await built.server.stop(None)
    worker.shutdown()
    service.close()
    store.close()


async def _enroll(served: Served, state_dir: Path) -> tuple[Enrollment, ClientTls]:
    options = EnrollOptions(
        served.address, served.enroll_address, served.ca_cert, served.secret, state_dir
    )
    identity = {"hardware_uuid": state_dir.name, "hostname": state_dir.name, "platform": "linux"}
    enrollment, _ = await enroll_machine(options, identity)
    tls = ClientTls(state_dir / "tls")
    assert tls.exists(), "an mTLS collector hands out a client certificate"
    return enrollment, tls


async def _hello(served: Served, enrollment: Enrollment, sessions: TlsSessions) -> None:
    """One stream as the daemon opens it: the collector answers a stale plan version with
    the current plan, which it does only for a stream it authenticated."""
    channel = open_channel(enrollment.collector, Path(enrollment.ca_cert), sessions=sessions)
    async with channel:
        stream = AgentStream(channel, enrollment.credential)
        await stream.hello("test", "stale-plan", 0)
        assert isinstance(await stream.receive(), PlanUpdate)
        await stream.finish()


def _revoke_certificate(db: Path, pem: bytes) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE client_certificates SET revoked_at = ?, revoke_reason = 'test'"
            " WHERE fingerprint = ?",
            (datetime.now(UTC).isoformat(), fingerprint(pem)),
        )


async def test_a_reconnect_resumes_and_is_authenticated_by_its_certificate(
    served: Served, tmp_path: Path
) -> None:
    enrollment, _ = await _enroll(served, tmp_path / "agent-a")
    sessions = TlsSessions()
    await _hello(served, enrollment, sessions)
    assert served.sessions() == {"resumed": 0, "full": 1}
    await _hello(served, enrollment, sessions)
    await _hello(served, enrollment, sessions)
    # Authenticated by its certificate (the collector requires one) on resumed sessions.
    assert served.sessions() == {"resumed": 2, "full": 1}
    await _hello(served, enrollment, TlsSessions())  # no session to offer: a full handshake
    assert served.sessions() == {"resumed": 2, "full": 2}


async def test_the_process_wide_sessions_resume_across_channels(
    served: Served, tmp_path: Path
) -> None:
    """The daemon passes no ``sessions``: ``open_channel`` uses the process's own."""
    enrollment, _ = await _enroll(served, tmp_path / "agent-default")
    for _ in range(2):
        channel = open_channel(served.address, Path(enrollment.ca_cert))
        async with channel:
            stream = AgentStream(channel, enrollment.credential)
            await stream.hello("test", "stale-plan", 0)
            assert isinstance(await stream.receive(), PlanUpdate)
            await stream.finish()
    assert served.sessions()["resumed"] >= 1


async def test_a_revoked_host_is_refused_on_a_resumed_session(
    served: Served, tmp_path: Path
) -> None:
    enrollment, _ = await _enroll(served, tmp_path / "agent-revoked")
    sessions = TlsSessions()
    await _hello(served, enrollment, sessions)
    await _hello(served, enrollment, sessions)
    host = served.service.store.get_host(int(enrollment.host_id))
    assert host is not None
    served.service.identity.revoke_host(host, actor="alice")
    before = served.sessions()
    with pytest.raises(TransportError) as refused:
        await _hello(served, enrollment, sessions)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in refused.value.details
    assert served.sessions()["resumed"] == before["resumed"] + 1  # the session did resume


async def test_a_renewed_certificate_is_presented_not_the_old_session(
    served: Served, tmp_path: Path
) -> None:
    enrollment, tls = await _enroll(served, tmp_path / "agent-renewed")
    sessions = TlsSessions()
    await _hello(served, enrollment, sessions)
    await _hello(served, enrollment, sessions)  # the old certificate's session, resumed
    old, _ = tls.load()
    async with open_channel(served.address, tls.ca_path, sessions=sessions) as channel:
        await renew_certificate(channel, tls)
    new, _ = tls.load()
    assert new != old
    # Were the old session resumed, the collector would see the old certificate: refused.
    _revoke_certificate(served.db, old)
    before = served.sessions()
    await _hello(served, enrollment, sessions)
    assert served.sessions()["full"] == before["full"] + 1
    await _hello(served, enrollment, sessions)  # and the new certificate's session resumes
    assert served.sessions()["resumed"] == before["resumed"] + 1


async def test_an_expired_certificate_is_refused_on_a_resumed_session(
    served: Served, tmp_path: Path
) -> None:
    """TLS does not re-verify a resumed session's certificate; the collector does."""
    enrollment, tls = await _enroll(served, tmp_path / "agent-expired")
    sessions = TlsSessions()
    await _hello(served, enrollment, sessions)
    served.clock.skip(timedelta(days=400))  # past the certificate's 30 days
    before = served.sessions()
    with pytest.raises(TransportError) as refused:
        await _hello(served, enrollment, sessions)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in refused.value.details
    assert served.sessions()["resumed"] == before["resumed"] + 1
    async with open_channel(served.address, tls.ca_path, sessions=sessions) as channel:
        with pytest.raises(TransportError) as renewal:
            await renew_certificate(channel, tls)
    assert renewal.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in renewal.value.details


async def test_grpc_resumes_the_first_certificate_whatever_a_channel_holds(
    served: Served, tmp_path: Path
) -> None:
    """Why ``TlsSessions`` keeps a cache per certificate: gRPC keys sessions by server name
    only, so a cache shared by two certificates hands the collector the first one."""
    first_enrollment, first = await _enroll(served, tmp_path / "agent-first")
    second_enrollment, second = await _enroll(served, tmp_path / "agent-second")
    shared = TlsSessions().cache_for(b"one cache for both")

    async def hello(enrollment: Enrollment, tls: ClientTls) -> None:
        certificate, key = tls.load()
        credentials = grpc.ssl_channel_credentials(tls.ca_path.read_bytes(), key, certificate)
        options = [("grpc.ssl_session_cache", shared)]
        async with grpc.aio.secure_channel(served.address, credentials, options) as channel:
            stream = AgentStream(channel, enrollment.credential)
            await stream.hello("test", "stale-plan", 0)
            assert isinstance(await stream.receive(), PlanUpdate)
            await stream.finish()

    await hello(first_enrollment, first)
    _revoke_certificate(served.db, first.load()[0])
    with pytest.raises(TransportError) as refused:
        await hello(second_enrollment, second)  # presents the first's session
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    first_host = first_enrollment.host_id
    assert f"client certificate of host {first_host} is revoked" in refused.value.details
    await _hello(served, second_enrollment, TlsSessions())  # its own certificate is fine


async def test_a_session_another_collector_process_issued_falls_back_to_a_full_handshake(
    served: Served, tmp_path: Path, pki: LocalPki
) -> None:
    """A restarted collector (or another one behind the same name) cannot decrypt the old
    session ticket: the agent simply makes a full handshake and carries on."""
    enrollment, _ = await _enroll(served, tmp_path / "agent-restart")
    sessions = TlsSessions()
    await _hello(served, enrollment, sessions)
    config = _mtls_config(pki)
    worker = ThreadPoolExecutor(max_workers=1)
    other = build(served.service, worker, config, served.metrics)
    await other.server.start()
    try:
        before = served.sessions()
        moved = Enrollment(
            f"localhost:{other.port}", enrollment.ca_cert, enrollment.host_id, enrollment.credential
        )
        await _hello(served, moved, sessions)  # offers the first collector's ticket
        assert served.sessions()["full"] == before["full"] + 1
        await _hello(served, moved, sessions)
        assert served.sessions()["resumed"] == before["resumed"] + 1
    finally:
        await other.server.stop(None)
        worker.shutdown()
