"""Identity and access against a real grpc.aio server with mTLS on 127.0.0.1.

Enroll secrets (expiry, use count, revocation), re-enrollment approval (a clone or rogue
machine claiming an enrolled identity waits for an administrator and never takes the host
over on its own), per-agent client certificates (the host is the certificate the handshake
verified, whatever the metadata says), renewal, and revocation of an open stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from agent.identity import new_key, signing_request
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.tls import ClientCa, LocalPki, fingerprint
from collector.transport.server import ServerConfig, build
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
#: The collector's clock starts at the real time: certificates it issues must verify now.
START = datetime.now(UTC).replace(microsecond=0)


def _identity(uuid: str = "UUID-PARKS-17", hostname: str = "parks-laptop-17") -> pb.HostIdentity:
    return pb.HostIdentity(
        hardware_uuid=uuid, hardware_serial="SER-1", hostname=hostname, platform="linux"
    )


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Mtls:
    service: PostureService
    clock: Clock
    pki: LocalPki
    address: str
    enroll: agent_pb2_grpc.AgentServiceStub
    worker: ThreadPoolExecutor
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def settled(self) -> None:
        """Wait until the store's one writer thread has finished what it started. An ack
        follows its batch's commit but comes before the batch's evaluation, and the test
        then uses the same store connection from this thread (the server's own callers
        go through the writer, as the web app does)."""
        await asyncio.get_running_loop().run_in_executor(self.worker, lambda: None)

    def stub(
        self, certificate: bytes | None = None, key: bytes | None = None
    ) -> agent_pb2_grpc.AgentServiceStub:
        credentials = grpc.ssl_channel_credentials(self.pki.ca_cert.read_bytes(), key, certificate)
        channel = grpc.aio.secure_channel(self.address, credentials)
        self.channels.append(channel)
        return agent_pb2_grpc.AgentServiceStub(channel)

    def secret(self, name: str = "parks", **limits: object) -> str:
        _, secret = self.service.identity.create_secret(name, **limits)  # type: ignore[arg-type]
        return secret


@pytest.fixture
async def mtls(tmp_path: Path, pki: LocalPki) -> AsyncIterator[Mtls]:
    clock = Clock()
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(ROOT / "policies"), clock=clock)
    worker = ThreadPoolExecutor(max_workers=1)
    config = ServerConfig(
        "127.0.0.1:0", pki.server_cert, pki.server_key, 1024 * 1024, mtls=True,
        enroll_listen="127.0.0.1:0", client_ca=ClientCa.from_dir(pki.ca_cert.parent),
    )  # fmt: skip
    built = build(service, worker, config)
    await built.server.start()
    enroll_channel = grpc.aio.secure_channel(
        f"127.0.0.1:{built.enroll_port}", grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    )
    running = Mtls(
        service, clock, pki, f"127.0.0.1:{built.port}",
        agent_pb2_grpc.AgentServiceStub(enroll_channel), worker, [enroll_channel],
    )  # fmt: skip
    yield running
    for channel in running.channels:
        await channel.close()
    await built.server.stop(None)
    worker.shutdown()
    service.close()
    store.close()


@dataclass(frozen=True)
class Agent:
    response: pb.EnrollResponse
    key: bytes

    @property
    def certificate(self) -> bytes:
        return self.response.client_certificate_pem


async def _enroll(
    mtls: Mtls, secret: str, identity: pb.HostIdentity | None = None, token: str = "token-a"
) -> Agent:
    key = new_key()
    request = pb.EnrollRequest(
        enroll_secret=secret,
        identity=identity or _identity(),
        csr_pem=signing_request(key, "parks"),
        request_token=token,
    )
    return Agent(await mtls.enroll.Enroll(request), key)


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def _batch(seq: int, username: str = "root") -> pb.AgentMessage:
    users = pb.Table(name="users", rows=[pb.Row(columns={"uid": "0", "username": username})])
    return pb.AgentMessage(
        batch=pb.Batch(seq=seq, collected_at_ms=int(time.time() * 1000), changed=[users])
    )


async def _ack(
    stub: agent_pb2_grpc.AgentServiceStub, seq: int, metadata: tuple[tuple[str, str], ...] = ()
) -> int:
    call = stub.Connect(metadata=metadata)
    await call.write(_batch(seq))
    while (reply := await call.read()).WhichOneof("message") != "ack":
        pass
    call.cancel()
    return reply.ack.seq


# Enroll secrets ----------------------------------------------------------------------------


async def test_a_wrong_secret_is_unauthenticated(mtls: Mtls) -> None:
    mtls.secret()
    error = await _refused(_enroll(mtls, "a-guess"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "enroll secret is wrong or revoked"


async def test_an_expired_secret_is_permission_denied(mtls: Mtls) -> None:
    secret = mtls.secret(expires_in=timedelta(days=7))
    mtls.clock.now = START + timedelta(days=7, seconds=1)
    error = await _refused(_enroll(mtls, secret))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    expired = (START + timedelta(days=7)).isoformat()
    assert f"enroll secret 'parks' expired at {expired}" in (error.details() or "")
    assert mtls.service.store.list_hosts() == []


async def test_a_used_up_secret_is_permission_denied_and_counts_only_real_uses(mtls: Mtls) -> None:
    secret = mtls.secret(max_uses=1)
    await _enroll(mtls, secret, _identity("UUID-1"))
    error = await _refused(_enroll(mtls, secret, _identity("UUID-2")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "has been used 1 of 1 times" in (error.details() or "")
    [record] = mtls.service.store.list_enroll_secrets()
    assert record.uses == 1
    assert [h.identity.hardware_uuid for h in mtls.service.store.list_hosts()] == ["UUID-1"]


async def test_a_revoked_secret_is_permission_denied(mtls: Mtls) -> None:
    secret = mtls.secret()
    assert mtls.service.identity.revoke_secret("parks", "alice") == 1
    error = await _refused(_enroll(mtls, secret))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "enroll secret 'parks' was revoked" in (error.details() or "")
    entry = mtls.service.store.audit_entries()[-1]
    assert (entry.actor, entry.action, entry.target) == (
        "alice", "enroll_secret.revoke", "enroll_secret:parks",
    )  # fmt: skip


# mTLS: identity from the certificate -------------------------------------------------------


async def test_enrollment_issues_a_certificate_whose_fingerprint_is_the_host(mtls: Mtls) -> None:
    agent = await _enroll(mtls, mtls.secret())
    assert agent.response.ca_certificate_pem == mtls.pki.ca_cert.read_bytes()
    [certificate] = mtls.service.store.host_certificates(1)
    assert certificate.fingerprint == fingerprint(agent.certificate)
    assert certificate.not_after == START + timedelta(days=30)
    stub = mtls.stub(agent.certificate, agent.key)
    assert await _ack(stub, 1) == 1
    await mtls.settled()
    assert mtls.service.store.host_rows(1, "users") == [{"uid": "0", "username": "root"}]


async def test_the_certificate_decides_the_host_whatever_the_metadata_claims(mtls: Mtls) -> None:
    secret = mtls.secret()
    first = await _enroll(mtls, secret, _identity("UUID-A"))
    second = await _enroll(mtls, secret, _identity("UUID-B"), token="token-b")
    stub = mtls.stub(first.certificate, first.key)
    forged = (("authorization", f"Bearer {second.response.agent_credential}"),)
    assert await _ack(stub, 1, forged) == 1
    await mtls.settled()
    assert mtls.service.store.stored_seqs(1) == [1]
    assert mtls.service.store.stored_seqs(2) == []


async def test_without_a_client_certificate_only_enroll_is_served(mtls: Mtls) -> None:
    await _enroll(mtls, mtls.secret())
    call = mtls.enroll.Connect()  # the enrollment listener: server TLS only
    await call.write(_batch(1))
    error = await _refused(call.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "requires a client certificate (mTLS)" in (error.details() or "")
    renewal = await _refused(mtls.enroll.RenewCertificate(pb.RenewRequest(csr_pem=b"x")))
    assert renewal.code() == grpc.StatusCode.UNAUTHENTICATED
    # The main listener does not even finish the handshake without a certificate.
    error = await _refused(mtls.stub().Connect().read())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls.service.store.stored_seqs(1) == []


async def test_a_certificate_from_another_ca_is_refused_in_the_handshake(
    mtls: Mtls, tmp_path: Path
) -> None:
    from collector.tls import ensure_local_pki

    await _enroll(mtls, mtls.secret())
    rogue_ca = ClientCa.from_dir(ensure_local_pki(tmp_path / "rogue").ca_cert.parent)
    key = new_key()
    issued = rogue_ca.issue(signing_request(key, "x"), 1, timedelta(days=1), datetime.now(UTC))
    error = await _refused(mtls.stub(issued.pem, key).Connect().read())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls.service.store.stored_seqs(1) == []


async def test_an_expired_certificate_is_refused_in_the_handshake(mtls: Mtls) -> None:
    await _enroll(mtls, mtls.secret())
    ca = ClientCa.from_dir(mtls.pki.ca_cert.parent)  # the collector's own CA, a day ago
    key = new_key()
    issued = ca.issue(signing_request(key, "x"), 1, timedelta(hours=1), START - timedelta(days=1))
    error = await _refused(mtls.stub(issued.pem, key).Connect().read())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls.service.store.stored_seqs(1) == []


async def test_an_enrollment_without_a_csr_is_refused_clearly(mtls: Mtls) -> None:
    request = pb.EnrollRequest(enroll_secret=mtls.secret(), identity=_identity())
    error = await _refused(mtls.enroll.Enroll(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requires mTLS" in (error.details() or "")
    bad = pb.EnrollRequest(enroll_secret=mtls.secret("b"), identity=_identity(), csr_pem=b"junk")
    error = await _refused(mtls.enroll.Enroll(bad))
    assert "not a PEM certificate signing request" in (error.details() or "")
    assert mtls.service.store.list_hosts() == []


async def test_renewal_issues_a_new_certificate_and_the_old_stays_valid(mtls: Mtls) -> None:
    agent = await _enroll(mtls, mtls.secret())
    mtls.clock.now = START + timedelta(minutes=1)
    key = new_key()
    stub = mtls.stub(agent.certificate, agent.key)
    renewed = await stub.RenewCertificate(pb.RenewRequest(csr_pem=signing_request(key, "p")))
    new = renewed.client_certificate_pem
    assert fingerprint(new) != fingerprint(agent.certificate)
    fingerprints = [c.fingerprint for c in mtls.service.store.host_certificates(1)]
    assert fingerprints == [fingerprint(agent.certificate), fingerprint(new)]
    assert mtls.service.store.host_certificates(1)[1].not_after == START + timedelta(
        days=30, minutes=1
    )
    assert await _ack(mtls.stub(new, key), 1) == 1
    assert await _ack(stub, 2) == 2


async def test_revocation_cuts_an_open_stream_at_its_next_message(mtls: Mtls) -> None:
    agent = await _enroll(mtls, mtls.secret())
    call = mtls.stub(agent.certificate, agent.key).Connect()
    await call.write(_batch(1))
    assert (await call.read()).ack.seq == 1
    await mtls.settled()
    mtls.service.revoke_credential(mtls.service.find_host("1"), "alice")
    await call.write(_batch(2))
    error = await _refused(call.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "agent credential of host 1 is revoked"
    assert mtls.service.store.stored_seqs(1) == [1]
    again = await _refused(mtls.stub(agent.certificate, agent.key).Connect().read())
    assert again.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (again.details() or "")
    [certificate] = mtls.service.store.host_certificates(1)
    assert certificate.revoked_at == START and certificate.revoke_reason == "revoked by alice"


async def test_a_revocation_from_another_process_reaches_the_deny_list(mtls: Mtls) -> None:
    agent = await _enroll(mtls, mtls.secret())
    call = mtls.stub(agent.certificate, agent.key).Connect()
    await call.write(_batch(1))
    assert (await call.read()).ack.seq == 1
    await mtls.settled()
    other = SqliteStore(mtls.service.store.path)  # as `posture-collector credential revoke`
    other.revoke_host_certificates(1, START, "stolen laptop")
    other.close()
    mtls.service.identity.refresh_deny_list()  # what the server's refresher does
    await call.write(_batch(2))
    error = await _refused(call.read())
    assert error.details() == "client certificate of host 1 is revoked"


# Re-enrollment approval --------------------------------------------------------------------


async def test_a_clone_waits_for_approval_and_a_denial_keeps_the_host_safe(mtls: Mtls) -> None:
    secret = mtls.secret()
    original = await _enroll(mtls, secret)
    assert await _ack(mtls.stub(original.certificate, original.key), 1) == 1
    clone = pb.HostIdentity()
    clone.CopyFrom(_identity(hostname="cloned-laptop"))
    error = await _refused(_enroll(mtls, secret, clone, token="clone-token"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "re-enrollment request 1 waits for an administrator" in (error.details() or "")
    retry = await _refused(_enroll(mtls, secret, clone, token="clone-token"))
    assert retry.code() == grpc.StatusCode.FAILED_PRECONDITION
    [request] = mtls.service.identity.pending_requests()
    assert (request.host_id, request.attempts, request.identity.hostname) == (1, 2, "cloned-laptop")

    mtls.service.identity.decide(request.id, False, "alice", "not a reinstall")
    denied = await _refused(_enroll(mtls, secret, clone, token="clone-token"))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "denied by alice: not a reinstall" in (denied.details() or "")
    assert await _ack(mtls.stub(original.certificate, original.key), 2) == 2
    await mtls.settled()
    [host] = mtls.service.store.list_hosts()
    assert host.identity.hostname == "parks-laptop-17" and not host.credential_revoked


async def test_approval_hands_the_host_over_to_that_request_only(mtls: Mtls) -> None:
    secret = mtls.secret()
    original = await _enroll(mtls, secret)
    old_stub = mtls.stub(original.certificate, original.key)
    assert await _ack(old_stub, 1) == 1
    for token in ("reinstall", "rogue"):
        error = await _refused(_enroll(mtls, secret, token=token))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    reinstall, _rogue = mtls.service.identity.pending_requests()
    mtls.service.identity.decide(reinstall.id, True, "alice")

    # The rogue's request is denied by the approval; its token cannot collect it.
    error = await _refused(_enroll(mtls, secret, token="rogue"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"request {reinstall.id} was approved instead" in (error.details() or "")
    # The old agent is cut off; the approved one becomes host 1 with its history.
    assert (await _refused(old_stub.Connect().read())).code() == grpc.StatusCode.UNAUTHENTICATED
    approved = await _enroll(mtls, secret, token="reinstall")
    assert approved.response.host_id == "1"
    assert await _ack(mtls.stub(approved.certificate, approved.key), 2) == 2
    await mtls.settled()
    assert mtls.service.store.stored_seqs(1) == [1, 2]
    reused = await _refused(_enroll(mtls, secret, token="reinstall"))
    assert reused.code() == grpc.StatusCode.PERMISSION_DENIED
    actions = [e.action for e in mtls.service.store.audit_entries()]
    assert actions[-1] == "enrollment.approve"
    assert actions.count("enrollment.request") == 2


async def test_deciding_a_request_twice_is_refused(mtls: Mtls) -> None:
    from collector.service import ServiceError

    secret = mtls.secret()
    await _enroll(mtls, secret)
    await _refused(_enroll(mtls, secret, token="again"))
    mtls.service.identity.decide(1, False, "alice")
    with pytest.raises(ServiceError, match="enrollment request 1 is not pending"):
        mtls.service.identity.decide(1, True, "bob")
    with pytest.raises(ServiceError, match="enrollment request 7 is not pending"):
        mtls.service.identity.decide(7, True, "bob")
