"""The gRPC transport against a real grpc.aio server with TLS on 127.0.0.1.

Each test talks to the server with raw protobuf messages, the way a buggy or hostile peer
would, and checks the status code and message it gets back, and that the server still
serves afterwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.tls import LocalPki
from collector.transport.server import ServerConfig, build_server
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
IDENTITY = pb.HostIdentity(
    hardware_uuid="4C4C4544-0042-3510-8052-B4C04F384E32",
    hardware_serial="B5R8N82",
    hostname="parks-laptop-17",
    platform="linux",
    os_version="Debian GNU/Linux 12 (bookworm)",
    agent_version="0.1.0",
)


@dataclass
class Running:
    service: PostureService
    channel: grpc.aio.Channel
    stub: agent_pb2_grpc.AgentServiceStub
    secret: str


@pytest.fixture
async def running(tmp_path: Path, pki: LocalPki) -> AsyncIterator[Running]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(ROOT / "policies"))
    worker = ThreadPoolExecutor(max_workers=1)
    config = ServerConfig("127.0.0.1:0", pki.server_cert, pki.server_key, 1024 * 1024)
    server, port, health = build_server(service, worker, config)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)
    _, secret = service.create_enroll_secret("parks")
    yield Running(service, channel, agent_pb2_grpc.AgentServiceStub(channel), secret)
    await channel.close()
    await server.stop(None)
    worker.shutdown()
    service.close()
    store.close()


async def _enroll(running: Running) -> str:
    response = await running.stub.Enroll(
        pb.EnrollRequest(enroll_secret=running.secret, identity=IDENTITY)
    )
    assert response.host_id == "1"
    assert {table.name for table in response.plan.tables} >= {"os_version", "system_info"}
    return response.agent_credential


def _batch(seq: int, tables: dict[str, list[dict[str, str]]], **digests: str) -> pb.AgentMessage:
    return pb.AgentMessage(
        batch=pb.Batch(
            seq=seq,
            collected_at_ms=int(time.time() * 1000),
            changed=[
                pb.Table(name=name, rows=[pb.Row(columns=row) for row in rows])
                for name, rows in tables.items()
            ],
            digests={name: f"digest-{name}" for name in tables} | digests,
        )
    )


async def _exchange(
    running: Running, credential: str, messages: list[pb.AgentMessage], replies: int
) -> list[pb.CollectorMessage]:
    call = running.stub.Connect(metadata=(("authorization", f"Bearer {credential}"),))
    for message in messages:
        await call.write(message)
    received = [await call.read() for _ in range(replies)]
    call.cancel()
    return received


async def _status(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_wrong_enroll_secret_is_unauthenticated(running: Running) -> None:
    error = await _status(
        running.stub.Enroll(pb.EnrollRequest(enroll_secret="guess", identity=IDENTITY))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "enroll secret is wrong or revoked" in (error.details() or "")
    await _enroll(running)  # still serving


async def test_enrolled_identity_cannot_be_taken_over(running: Running) -> None:
    await _enroll(running)
    error = await _status(
        running.stub.Enroll(pb.EnrollRequest(enroll_secret=running.secret, identity=IDENTITY))
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "needs an administrator" in (error.details() or "")


async def test_unknown_and_revoked_credentials_are_refused(running: Running) -> None:
    credential = await _enroll(running)
    call = running.stub.Connect(metadata=(("authorization", "Bearer not-a-credential"),))
    error = await _status(call.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "unknown agent credential"

    running.service.revoke_credential(running.service.find_host("1"))
    call = running.stub.Connect(metadata=(("authorization", f"Bearer {credential}"),))
    error = await _status(call.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (error.details() or "")


async def test_batches_are_acked_after_commit_and_stored_once(running: Running) -> None:
    credential = await _enroll(running)
    users = {"users": [{"uid": "0", "username": "root"}]}
    replies = await _exchange(running, credential, [_batch(1, users), _batch(1, users)], 2)
    assert [reply.ack.seq for reply in replies] == [1, 1]
    store = running.service.store
    assert store.stored_seqs(1) == [1]
    assert store.host_rows(1, "users") == [{"uid": "0", "username": "root"}]
    results = running.service.host_view(running.service.find_host("1")).results
    assert results, "the batch was evaluated"


async def test_digest_mismatch_asks_for_a_full_resend(running: Running) -> None:
    credential = await _enroll(running)
    batch = _batch(1, {"users": []}, groups="digest-the-collector-never-saw")
    ack, resend = await _exchange(running, credential, [batch], 2)
    assert ack.ack.seq == 1
    assert list(resend.resend_full.tables) == ["groups"]


async def test_oversized_message_is_refused_and_the_server_keeps_serving(
    running: Running,
) -> None:
    credential = await _enroll(running)
    huge = {"processes": [{"cmdline": "x" * 1000, "pid": str(n)} for n in range(2000)]}
    call = running.stub.Connect(metadata=(("authorization", f"Bearer {credential}"),))
    await call.write(_batch(1, huge))
    error = await _status(call.read())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (error.details() or "")

    replies = await _exchange(running, credential, [_batch(1, {"users": []})], 1)
    assert replies[0].ack.seq == 1


async def test_malformed_batch_is_invalid_and_loses_nothing_accepted(running: Running) -> None:
    credential = await _enroll(running)
    await _exchange(running, credential, [_batch(1, {"users": []})], 1)
    call = running.stub.Connect(metadata=(("authorization", f"Bearer {credential}"),))
    await call.write(_batch(0, {"users": []}))
    error = await _status(call.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seq must be 1 or more" in (error.details() or "")
    assert running.service.store.stored_seqs(1) == [1]


async def test_health_reports_serving(running: Running) -> None:
    stub = health_pb2_grpc.HealthStub(running.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
