"""Limits: token buckets and the stream registry on their own, then each limit on a real
grpc.aio server with TLS on 127.0.0.1, answered with its status and counted in metrics,
while other hosts go on being served."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from collector.limits import HostLimiter, LimitConfig, StreamRegistry, TokenBucket
from collector.metrics import CollectorMetrics
from collector.model import HostIdentity
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.tls import LocalPki
from collector.transport.server import ServerConfig, build
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# The pieces --------------------------------------------------------------------------------


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token comes every half second
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 10
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)  # never above burst


def test_a_request_larger_than_the_burst_passes_when_full_and_is_paid_for_later() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100.0, burst=1000.0, clock=clock)
    assert bucket.take(5000) == 0.0
    assert bucket.take(1) == pytest.approx(40.01)  # the debt of 4000 tokens, then one
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, clock=clock)


def test_the_host_limiter_keeps_hosts_apart_and_refunds_a_refused_batch() -> None:
    clock = FakeClock()
    config = LimitConfig(
        host_batch_rate=1, host_batch_burst=2, host_byte_rate=10, host_byte_burst=100
    )
    limiter = HostLimiter(config, clock)
    assert limiter.check(1, 10) is None and limiter.check(1, 10) is None
    assert limiter.check(1, 10) == ("host_batches", pytest.approx(1.0))
    assert limiter.check(2, 10) is None  # another host has its own buckets
    clock.now += 5
    assert limiter.check(2, 90) is None
    limit, wait = limiter.check(2, 50) or ("", 0.0)
    assert limit == "host_bytes" and wait == pytest.approx(4.0)
    clock.now += 0.5  # the refused batch did not spend a batch token
    assert limiter.check(2, 1) is None


def test_the_host_limiter_forgets_idle_hosts_only() -> None:
    clock = FakeClock()
    limiter = HostLimiter(LimitConfig(host_batch_rate=1, host_batch_burst=1), clock, keep=2)
    for host in (1, 2, 3):
        limiter.check(host, 1)
    assert limiter.check(1, 1) is not None  # host 1 is still limited: not forgotten
    clock.now += 10
    for host in (4, 5, 6):
        limiter.check(host, 1)
    assert len(limiter._buckets) <= 3


def test_a_second_stream_of_a_host_replaces_the_first() -> None:
    registry = StreamRegistry(max_streams=2)
    first, _ = registry.open(1)
    woken: list[int] = []
    assert first is not None
    first.on_replaced(lambda: woken.append(1))
    second, replaced = registry.open(1)
    assert replaced is first and first.replaced and woken == [1]
    assert second is not None and not second.replaced
    registry.close(first)  # closing the replaced slot leaves the new one registered
    assert len(registry) == 1
    assert registry.open(2)[0] is not None
    assert registry.open(3) == (None, None)  # full
    assert registry.open(2)[0] is not None  # a host already counted may still reconnect


# On a real server --------------------------------------------------------------------------


@dataclass
class Limited:
    service: PostureService
    metrics: CollectorMetrics
    channel: grpc.aio.Channel
    stub: agent_pb2_grpc.AgentServiceStub
    secret: str
    port: int


async def _serve(
    tmp_path: Path, pki: LocalPki, limits: LimitConfig, **config: object
) -> AsyncIterator[Limited]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(ROOT / "policies"))
    worker = ThreadPoolExecutor(max_workers=1)
    metrics = CollectorMetrics()
    server_config = ServerConfig(
        "127.0.0.1:0", pki.server_cert, pki.server_key, 1024 * 1024, limits=limits,
        **config,  # type: ignore[arg-type]
    )  # fmt: skip
    built = build(service, worker, server_config, metrics)
    await built.server.start()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{built.port}", grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    )
    _, secret = service.create_enroll_secret("limits")
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    yield Limited(service, metrics, channel, stub, secret, built.port)
    await channel.close()
    await built.server.stop(None)
    worker.shutdown()
    service.close()
    store.close()


@pytest.fixture
async def strict(tmp_path: Path, pki: LocalPki) -> AsyncIterator[Limited]:
    """Two batches back to back per host, then refusals (no pausing); two enrollments."""
    limits = LimitConfig(
        host_batch_rate=0.01, host_batch_burst=2, enroll_rate=0.01, enroll_burst=2,
        max_streams=2, pause_up_to=0.0,
    )  # fmt: skip
    async for running in _serve(tmp_path, pki, limits):
        yield running


async def _enroll(running: Limited, uuid: str) -> str:
    identity = pb.HostIdentity(hardware_uuid=uuid, hostname=uuid, platform="linux")
    request = pb.EnrollRequest(enroll_secret=running.secret, identity=identity)
    return (await running.stub.Enroll(request)).agent_credential


def _metadata(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def _batch(seq: int) -> pb.AgentMessage:
    users = pb.Table(name="users", rows=[pb.Row(columns={"uid": "0", "username": "root"})])
    return pb.AgentMessage(
        batch=pb.Batch(seq=seq, collected_at_ms=int(time.time() * 1000), changed=[users])
    )


async def _acks(call: grpc.aio.StreamStreamCall, seqs: list[int]) -> list[int]:  # type: ignore[type-arg]
    for seq in seqs:
        await call.write(_batch(seq))
    acks: list[int] = []
    while len(acks) < len(seqs):
        reply = await call.read()
        if reply.WhichOneof("message") == "ack":
            acks.append(reply.ack.seq)
    return acks


def _count(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_host_over_its_rate_is_refused_with_a_retry_hint_and_others_go_on(
    strict: Limited,
) -> None:
    flooder, other = await _enroll(strict, "FLOOD"), await _enroll(strict, "CALM")
    call = strict.stub.Connect(metadata=_metadata(flooder))
    assert await _acks(call, [1, 2]) == [1, 2]
    await call.write(_batch(3))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "host 1 is over its host batches rate; retry in" in (error.details() or "")
    retry = dict(error.trailing_metadata() or ())["retry-after-ms"]
    assert 1 <= int(retry) <= 100_000
    assert strict.service.store.stored_seqs(1) == [1, 2]  # nothing of batch 3 was stored

    calm = strict.stub.Connect(metadata=_metadata(other))
    assert await _acks(calm, [1, 2]) == [1, 2]
    calm.cancel()
    assert _count(strict.metrics, "posture_limited_total", limit="host_batches") == 1
    labels = {"method": "Connect", "code": "RESOURCE_EXHAUSTED"}
    assert _count(strict.metrics, "posture_rpc_errors_total", **labels) == 1


async def test_a_host_over_its_rate_is_paused_when_the_wait_is_short(
    tmp_path: Path, pki: LocalPki
) -> None:
    # One batch at once, the next 4 s later: within the 10 s pause, so waited for, not refused.
    limits = LimitConfig(host_batch_rate=0.25, host_batch_burst=1, pause_up_to=10.0)
    async for running in _serve(tmp_path, pki, limits):
        credential = await _enroll(running, "BUSY")
        call = running.stub.Connect(metadata=_metadata(credential))
        assert await _acks(call, [1, 2]) == [1, 2]
        call.cancel()
        assert _count(running.metrics, "posture_limited_total", limit="host_batches") >= 1
        assert _count(running.metrics, "posture_rpc_errors_total", method="Connect",
                      code="RESOURCE_EXHAUSTED") == 0  # fmt: skip
        assert running.service.store.stored_seqs(1) == [1, 2]


async def test_too_many_enrollments_are_refused_with_a_retry_hint(strict: Limited) -> None:
    await _enroll(strict, "E1")
    await _enroll(strict, "E2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _enroll(strict, "E3")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many enrollments; retry in" in (caught.value.details() or "")
    assert "retry-after-ms" in dict(caught.value.trailing_metadata() or ())
    assert [h.identity.hardware_uuid for h in strict.service.store.list_hosts()] == ["E1", "E2"]
    assert _count(strict.metrics, "posture_limited_total", limit="enrollments") == 1


async def test_a_newer_stream_of_a_host_replaces_the_older(strict: Limited) -> None:
    credential = await _enroll(strict, "TWICE")
    first = strict.stub.Connect(metadata=_metadata(credential))
    await first.write(pb.AgentMessage(hello=pb.Hello(plan_version="x")))
    await first.read()  # the hello is answered: the stream is open and registered
    second = strict.stub.Connect(metadata=_metadata(credential))
    await second.write(pb.AgentMessage(hello=pb.Hello(plan_version="x")))
    await second.read()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            await first.read()
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert caught.value.details() == "a newer stream of host 1 replaced this one"
    assert await _acks(second, [1]) == [1]
    assert _count(strict.metrics, "posture_streams_replaced_total") == 1


async def test_streams_beyond_the_collector_limit_are_refused(strict: Limited) -> None:
    calls = []
    for uuid in ("S1", "S2"):
        call = strict.stub.Connect(metadata=_metadata(await _enroll(strict, uuid)))
        await call.write(pb.AgentMessage(hello=pb.Hello(plan_version="x")))
        await call.read()
        calls.append(call)
    # The enrollment bucket is spent: enroll the third host in the service directly.
    third = strict.service.enroll(strict.secret, HostIdentity("S3", "", "S3", "linux", "", ""))
    call = strict.stub.Connect(metadata=_metadata(third.credential))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "the collector has 2 streams open; retry later"
    assert _count(strict.metrics, "posture_limited_total", limit="streams") == 1
    calls[0].cancel()
    await asyncio.sleep(0)
    for _ in range(100):  # the cancelled stream's slot is released as its handler ends
        retry = strict.stub.Connect(metadata=_metadata(third.credential))
        await retry.write(_batch(1))
        try:
            if (await retry.read()).ack.seq == 1:
                break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(0.05)
    assert strict.service.store.stored_seqs(third.host.id) == [1]
    calls[1].cancel()


async def test_a_connection_that_never_handshakes_is_closed(tmp_path: Path, pki: LocalPki) -> None:
    async for running in _serve(tmp_path, pki, LimitConfig(), handshake_timeout_ms=300):
        loop = asyncio.get_running_loop()
        with socket.create_connection(("127.0.0.1", running.port)) as idle:
            idle.settimeout(30)  # a guard against hanging, far above the 0.3 s timeout
            assert await loop.run_in_executor(None, idle.recv, 1024) == b""
        assert await _enroll(running, "STILL-SERVING")


async def test_a_client_pinging_too_often_is_sent_away(tmp_path: Path, pki: LocalPki) -> None:
    async for running in _serve(tmp_path, pki, LimitConfig()):
        credential = await _enroll(running, "PINGER")
        options = [
            ("grpc.keepalive_time_ms", 50),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{running.port}",
            grpc.ssl_channel_credentials(pki.ca_cert.read_bytes()),
            options=options,
        )
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=_metadata(credential))
        await call.write(pb.AgentMessage(hello=pb.Hello(plan_version="x")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                await call.read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "Too many pings"
        await channel.close()
        calm = running.stub.Connect(metadata=_metadata(credential))
        assert await _acks(calm, [1]) == [1]
        calm.cancel()
