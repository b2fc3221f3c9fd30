"""The Prometheus endpoint, scraped over real HTTP after real gRPC traffic over TLS.

The agents here are the real agent code (spool, transport, daemon session) with a source of
fixed answers, streaming to an in-process grpc.aio collector on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.daemon import Agent
from agent.sources.base import Row, TableRequest
from agent.spool import Enrollment, Spool
from agent.transport import enroll, open_channel
from collector.metrics import HostCounts, MetricsServer, count_hosts, parse_listen
from collector.model import FactBatch, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.tls import LocalPki
from collector.transport.server import ServerConfig, build_server, start_metrics
from protos.posture.v1 import agent_pb2 as pb
from protos.posture.v1 import agent_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
USERS: list[Row] = [{"uid": "0", "username": "root", "gid": "0", "shell": "/bin/bash"}]


@dataclass
class Served:
    service: PostureService
    address: str
    ca_cert: Path
    secret: str
    endpoint: MetricsServer


@pytest.fixture
async def served(tmp_path: Path, pki: LocalPki) -> AsyncIterator[Served]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(ROOT / "policies"))
    metrics, endpoint = start_metrics(service, "127.0.0.1:0")
    worker = ThreadPoolExecutor(max_workers=1)
    config = ServerConfig("127.0.0.1:0", pki.server_cert, pki.server_key)
    server, port, _ = build_server(service, worker, config, metrics)
    await server.start()
    _, secret = service.create_enroll_secret("metrics")
    yield Served(service, f"127.0.0.1:{port}", pki.ca_cert, secret, endpoint)
    await server.stop(None)
    endpoint.stop()
    worker.shutdown()
    service.close()
    store.close()


class _FixedSource:
    """Answers every table with the same rows: the platform's probes are not under test."""

    name = "fixed"

    def available(self) -> bool:
        return True

    def tables(self) -> frozenset[str]:
        return frozenset({"users", "os_version"})

    def collect(self, request: TableRequest) -> list[Row]:
        return USERS if request.name == "users" else [{"name": "Debian", "platform": "debian"}]


async def _enrolled_agent(served: Served, tmp_path: Path, uuid: str) -> tuple[Agent, Enrollment]:
    identity = {"hardware_uuid": uuid, "hostname": uuid, "platform": "linux"}
    async with open_channel(served.address, served.ca_cert) as channel:
        host_id, credential, plan = await enroll(channel, served.secret, identity)
    enrollment = Enrollment(served.address, str(served.ca_cert), host_id, credential)
    return Agent(Spool(tmp_path / uuid / "agent.db"), [_FixedSource()], plan), enrollment


def _scrape(endpoint: MetricsServer) -> dict[str, float]:
    """Every sample as ``name{label=value,...}`` -> value."""
    with urllib.request.urlopen(endpoint.url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_follow_real_traffic(served: Served, tmp_path: Path) -> None:
    agent, enrollment = await _enrolled_agent(served, tmp_path, "uuid-reporting")
    for _ in range(3):  # a backlog: the collector was unreachable for three collections
        await agent.collect_once()
    await agent.session(enrollment, drain=True)
    await _enrolled_agent(served, tmp_path, "uuid-silent")  # enrolled, never reports

    refused = grpc.aio.secure_channel(
        served.address, grpc.ssl_channel_credentials(served.ca_cert.read_bytes())
    )
    call = agent_pb2_grpc.AgentServiceStub(refused).Connect(
        metadata=(("authorization", "Bearer wrong"),)
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await call.read()
    await refused.close()

    samples = _scrape(served.endpoint)
    assert samples["posture_reports_total{outcome=stored}"] == 3
    assert samples["posture_enrollments_total{}"] == 2
    assert samples["posture_rpc_errors_total{code=UNAUTHENTICATED,method=Connect}"] == 1
    assert samples["posture_ack_latency_seconds_count{}"] == 3
    assert samples["posture_ingest_seconds_count{}"] == 3
    assert samples["posture_evaluation_seconds_count{}"] >= 1
    assert samples["posture_hosts_enrolled{}"] == 2
    assert samples["posture_hosts_stale{}"] == 1  # the silent host has never reported
    assert samples["posture_open_streams{}"] == 0  # the agent closed its stream when done
    # Hello said 3 were spooled; the last batch said none waited behind it.
    assert samples["posture_agent_spooled_batches{}"] == 0
    assert samples["posture_agents_with_backlog{}"] == 0


async def test_spool_depth_and_open_streams_while_a_backlog_drains(served: Served) -> None:
    host, credential = await _raw_enroll(served)
    channel = grpc.aio.secure_channel(
        served.address, grpc.ssl_channel_credentials(served.ca_cert.read_bytes())
    )
    call = agent_pb2_grpc.AgentServiceStub(channel).Connect(
        metadata=(("authorization", f"Bearer {credential}"),)
    )
    await call.write(pb.AgentMessage(hello=pb.Hello(plan_version="old", spooled_batches=40)))
    batch = pb.Batch(seq=1, collected_at_ms=int(time.time() * 1000), spooled_batches=39)
    await call.write(pb.AgentMessage(batch=batch))
    while (await call.read()).WhichOneof("message") != "ack":
        pass
    samples = _scrape(served.endpoint)
    assert samples["posture_open_streams{}"] == 1
    assert samples["posture_agent_spooled_batches{}"] == 39
    assert samples["posture_agent_spooled_batches_max{}"] == 39
    assert samples["posture_agents_with_backlog{}"] == 1
    assert host == "1"
    call.cancel()
    await channel.close()


async def _raw_enroll(served: Served) -> tuple[str, str]:
    identity = {"hardware_uuid": "uuid-raw", "hostname": "raw", "platform": "linux"}
    async with open_channel(served.address, served.ca_cert) as channel:
        host_id, credential, _ = await enroll(channel, served.secret, identity)
    return host_id, credential


def test_count_hosts_applies_the_services_staleness_rule(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, [], interval_seconds=300)
    _, secret = service.create_enroll_secret("count")
    now = datetime.now(UTC)
    for name, collected in (("earlier", now - timedelta(seconds=300)), ("latest", now)):
        host = service.enroll(secret, HostIdentity(name, "", name, "linux", "", "")).host
        batch = FactBatch(1, collected, [TableFacts("users", [])], {"users": "d"})
        store.apply_batch(host.id, batch, collected)
    service.enroll(secret, HostIdentity("never", "", "never", "linux", "", ""))
    # Stale = never reported, or last collected more than 2 x 300 s ago.
    assert count_hosts(store, now + timedelta(seconds=200)) == HostCounts(3, 1)
    assert count_hosts(store, now + timedelta(seconds=400)) == HostCounts(3, 2)
    assert count_hosts(store, now + timedelta(seconds=700)) == HostCounts(3, 3)
    store.close()


def test_listen_addresses_are_parsed_or_refused() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9464", "host:", ":9464", "host:port"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


async def test_the_daemon_closes_its_stream_between_collections(
    served: Served, tmp_path: Path
) -> None:
    agent, enrollment = await _enrolled_agent(served, tmp_path, "uuid-daemon")
    agent.plan = replace(agent.plan, interval_seconds=1)
    daemon = asyncio.create_task(agent.run(enrollment))
    try:
        deadline = time.monotonic() + 30
        while len(served.service.store.stored_seqs(1)) < 3:
            assert time.monotonic() < deadline, "the daemon stopped reporting"
            await asyncio.sleep(0.1)
    finally:
        daemon.cancel()
    samples = _scrape(served.endpoint)
    # One stream per collection, each closed once its batch was acknowledged.
    assert samples["posture_streams_total{}"] >= 3
    assert samples["posture_open_streams{}"] <= 1
    assert agent.spool.pending_count() <= 1
