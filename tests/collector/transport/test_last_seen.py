"""When a stream marks its host seen: a real grpc.aio collector with TLS on 127.0.0.1, real
SQLite, raw protobuf messages.

A hello that announces spooled batches leaves ``last_seen_at`` to the batch's own grouped
commit (no commit of its own on the writer thread); whatever the stream then does, the host
ends up seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.tls import LocalPki
from collector.transport.server import ServerConfig, build_server
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent.parent
Call = grpc.aio.StreamStreamCall[pb.AgentMessage, pb.CollectorMessage]
IDENTITY = pb.HostIdentity(hardware_uuid="uuid-seen", hostname="seen", platform="linux")


@dataclass
class Running:
    service: PostureService
    worker: ThreadPoolExecutor
    stub: agent_pb2_grpc.AgentServiceStub
    credential: str

    async def last_seen(self) -> datetime | None:
        """The host's ``last_seen_at``, read in the writer thread (after its queued work)."""
        loop = asyncio.get_running_loop()
        host = await loop.run_in_executor(self.worker, self.service.store.get_host, 1)
        assert host is not None
        return host.last_seen_at

    async def seen_eventually(self) -> datetime:
        """Wait (up to 30 s) for the host to be marked seen: the mark of a stream that ends
        is queued as the collector closes it, just after the agent sees it end."""
        deadline = time.monotonic() + 30
        while (seen := await self.last_seen()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert seen is not None, "the host was never marked seen"
        return seen


@pytest.fixture
async def running(tmp_path: Path, pki: LocalPki) -> AsyncIterator[Running]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(ROOT / "policies"))
    worker = ThreadPoolExecutor(max_workers=1)
    config = ServerConfig("127.0.0.1:0", pki.server_cert, pki.server_key)
    server, port, _ = build_server(service, worker, config)
    await server.start()
    credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    _, secret = service.create_enroll_secret("seen")
    enrolled = await stub.Enroll(pb.EnrollRequest(enroll_secret=secret, identity=IDENTITY))
    yield Running(service, worker, stub, enrolled.agent_credential)
    await channel.close()
    await server.stop(None)
    worker.shutdown()
    service.close()
    store.close()


def _connect(running: Running) -> Call:
    return running.stub.Connect(metadata=(("authorization", f"Bearer {running.credential}"),))


def _hello(spooled: int) -> pb.AgentMessage:
    return pb.AgentMessage(hello=pb.Hello(plan_version="stale", spooled_batches=spooled))


def _batch(seq: int) -> pb.AgentMessage:
    users = pb.Table(name="users", rows=[pb.Row(columns={"uid": "0", "username": "root"})])
    return pb.AgentMessage(
        batch=pb.Batch(
            seq=seq,
            collected_at_ms=int(time.time() * 1000),
            changed=[users],
            digests={"users": "digest-users"},
        )
    )


async def _read_until_ack(
    call: Call,
) -> int:
    while True:
        message = await call.read()
        assert isinstance(message, pb.CollectorMessage)
        if message.WhichOneof("message") == "ack":
            return int(message.ack.seq)


async def _kind(call: Call) -> str | None:
    message = await call.read()
    assert isinstance(message, pb.CollectorMessage)
    return message.WhichOneof("message")


async def _finish(call: Call) -> None:
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
        pass
    assert await call.code() == grpc.StatusCode.OK


async def test_a_hello_without_spooled_batches_marks_the_host_seen_at_once(
    running: Running,
) -> None:
    call = _connect(running)
    await call.write(_hello(0))
    assert await _kind(call) == "plan"  # the hello was handled
    assert await running.last_seen() is not None  # while the stream is still open
    await _finish(call)


async def test_a_batch_marks_the_host_seen_in_its_own_commit(running: Running) -> None:
    call = _connect(running)
    await call.write(_hello(1))
    await call.write(_batch(1))
    assert await _read_until_ack(call) == 1
    seen = await running.last_seen()
    assert seen is not None  # set with the batch, before the stream ends
    host = running.service.store.get_host(1)
    assert host is not None and host.last_seq == 1
    await _finish(call)


async def test_a_stream_that_announced_batches_but_sent_none_still_marks_the_host_seen(
    running: Running,
) -> None:
    call = _connect(running)
    await call.write(_hello(3))
    assert await _kind(call) == "plan"
    assert await running.last_seen() is None  # left to the batches that were announced
    await _finish(call)
    await running.seen_eventually()
