"""grpc.aio server wiring: TLS, limits, health checking, reflection and metrics.

Shaped like grpc's own ``examples/python``: build the server, register servicers, start,
wait, and stop with a grace period on SIGTERM so open streams finish their current batch.
With ``metrics_listen`` set, Prometheus metrics are served over plain HTTP on that address
(``collector.metrics``); they hold no secrets, but bind it to a management network. With
``http_listen`` set, the dashboard and JSON API (``collector.web``) share the event loop and
the store's worker thread.

**mTLS** (``mtls``): the main listener requires a client certificate signed by the
collector's CA (``require_client_auth``), and the host is known by its fingerprint. A new
agent has no certificate yet, and grpcio offers no "ask for a certificate but do not require
it" mode (without ``require_client_auth`` it never asks, so no certificate reaches the
servicer), so enrollment gets a **second listener** (``enroll_listen``) with server-only TLS.
The same servicer answers on both, and refuses every call but Enroll from a peer without a
verified certificate. A separate port is also easy to firewall: open it only while rolling
agents out.

**Revocation** reaches open streams two ways: every message is checked against a deny list
reloaded from the database every ``revocation_check_seconds`` (CLI revocations come from
other processes), and every connection is closed after ``max_connection_age_ms`` (plus
``max_connection_age_grace_ms`` for a call in flight), so even an idle stream re-handshakes
and is authenticated afresh. With the defaults (30 s, 4 min + 30 s) a revoked agent is cut
off within 4.5 minutes at most.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from collector.enrollment import parse_duration
from collector.limits import LimitConfig
from collector.metrics import (
    CollectorMetrics,
    HostCounts,
    MetricsServer,
    count_hosts,
    instrument_evaluations,
    serve_metrics,
)
from collector.service import PostureService
from collector.store import open_store
from collector.tls import ClientCa
from collector.transport.servicer import AgentServicer
from collector.web.app import create_app
from collector.web.serve import start_http
from protos.posture.v1 import agent_pb2, agent_pb2_grpc

__all__ = [
    "Built",
    "ServerConfig",
    "build",
    "build_server",
    "refresh_revocations",
    "run_server",
    "start_metrics",
]

log = logging.getLogger("posture.collector")

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    tls_cert: Path
    tls_key: Path
    max_message_bytes: int = 4 * 1024 * 1024
    grace_seconds: float = 5.0
    #: HOST:PORT for the Prometheus endpoint (``/metrics``); None serves no metrics.
    metrics_listen: str | None = None
    #: HOST:PORT for the dashboard and JSON API (``collector.web``); None serves neither.
    http_listen: str | None = None
    #: Require per-agent client certificates signed by ``client_ca`` (see the docstring).
    mtls: bool = False
    #: Enrollment listener (server-only TLS) when ``mtls`` is on; required then.
    enroll_listen: str | None = None
    #: The CA that issues and verifies client certificates (``tls_dir`` of ``serve``).
    client_ca: ClientCa | None = None
    client_cert_lifetime: str = "30d"
    max_connection_age_ms: int = 4 * 60_000
    max_connection_age_grace_ms: int = 30_000
    revocation_check_seconds: float = 30.0
    handshake_timeout_ms: int = 20_000
    limits: LimitConfig = field(default_factory=LimitConfig)


def _options(config: ServerConfig) -> list[tuple[str, int]]:
    """Hardening from reliability-security.md §4: bounded messages, handshakes, pings, idle
    links and connection age (which is also how revocation reaches idle streams).

    Keepalive enforcement: a client pinging more often than once a minute without data
    gets two strikes, then GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings"); pings with no call
    open count as abuse too. Agents ping every 5 minutes, only during a call.
    """
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_concurrent_streams", 16),
        ("grpc.keepalive_time_ms", 3_600_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", 15 * 60_000),
        ("grpc.max_connection_age_ms", config.max_connection_age_ms),
        ("grpc.max_connection_age_grace_ms", config.max_connection_age_grace_ms),
        ("grpc.server_handshake_timeout_ms", config.handshake_timeout_ms),
    ]


def _credentials(config: ServerConfig) -> tuple[grpc.ServerCredentials, grpc.ServerCredentials]:
    """(main listener, enrollment listener): the main one requires client certificates
    under mTLS; enrollment never does."""
    pair = [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
    server_only = grpc.ssl_server_credentials(pair)
    if not config.mtls:
        return server_only, server_only
    if config.client_ca is None or config.enroll_listen is None:
        raise ValueError("mTLS needs the client CA and an enrollment listener")
    mutual = grpc.ssl_server_credentials(
        pair, root_certificates=config.client_ca.ca_pem, require_client_auth=True
    )
    return mutual, server_only


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials) -> int:
    port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return port


def _raise_file_limit() -> None:
    """Each open stream holds a descriptor; the default 1,024 stalls near 1,000 agents."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True)
class Built:
    """A ready-to-start server with its bound ports (0 in a listen address picks one)."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    servicer: AgentServicer
    #: The enrollment listener's port under mTLS, else None.
    enroll_port: int | None = None


def build_server(
    service: PostureService,
    worker: ThreadPoolExecutor,
    config: ServerConfig,
    metrics: CollectorMetrics | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """A ready-to-start server; returns it with the bound port (0 in ``listen`` picks one).

    Calls are recorded in ``metrics`` (a private, unserved set when None).
    """
    built = build(service, worker, config, metrics)
    return built.server, built.port, built.health


def build(
    service: PostureService,
    worker: ThreadPoolExecutor,
    config: ServerConfig,
    metrics: CollectorMetrics | None = None,
) -> Built:
    """``build_server`` with everything a caller may need (ports, the servicer)."""
    server = grpc.aio.server(
        options=_options(config),
        # Streams are capped by the servicer with a clear message; this bounds the rest.
        maximum_concurrent_rpcs=config.limits.max_streams + 256,
    )
    if config.mtls and config.client_ca is not None:
        service.identity.use_ca(config.client_ca, parse_duration(config.client_cert_lifetime))
    servicer = AgentServicer(
        service, worker, metrics or CollectorMetrics(), mtls=config.mtls, limits=config.limits
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    main, enrollment = _credentials(config)
    port = _bind(server, config.listen, main)
    enroll_port = None
    if config.mtls and config.enroll_listen is not None:
        enroll_port = _bind(server, config.enroll_listen, enrollment)
    return Built(server, port, health, servicer, enroll_port)


async def refresh_revocations(
    service: PostureService, worker: ThreadPoolExecutor, every_seconds: float
) -> None:
    """Reload the deny list from the database forever (cancel the task to stop)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(worker, service.identity.refresh_deny_list)
        except Exception:  # a locked or failing database: keep the last list, try again
            log.exception("could not reload the revocation deny list")
        await asyncio.sleep(every_seconds)


def start_metrics(service: PostureService, listen: str) -> tuple[CollectorMetrics, MetricsServer]:
    """Metrics for ``service``, evaluation timings included, served on ``listen``."""
    # Scrapes run on the metrics server's threads: they read through a store of their own.
    counts_store, counts_lock = open_store(service.store.location), threading.Lock()

    def counts() -> HostCounts:
        with counts_lock:
            return count_hosts(counts_store, service.clock())

    metrics = CollectorMetrics(counts)
    instrument_evaluations(service, metrics)
    endpoint = serve_metrics(metrics, listen)
    log.info("metrics on %s", endpoint.url)
    return metrics, endpoint


async def run_server(service: PostureService, config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then drain with a grace period."""
    _raise_file_limit()
    metrics, endpoint = None, None
    if config.metrics_listen is not None:
        metrics, endpoint = start_metrics(service, config.metrics_listen)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posture-store")
    built = build(service, worker, config, metrics)
    server, port, health = built.server, built.port, built.health
    await server.start()
    revocations = asyncio.create_task(
        refresh_revocations(service, worker, config.revocation_check_seconds)
    )
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = config.listen.rsplit(":", 1)[0]
    mode = "mTLS" if config.mtls else "TLS"
    log.info("collector listening on %s:%s (%s)", host, port, mode)
    print(f"posture-collector listening on {host}:{port}", flush=True)
    if built.enroll_port is not None and config.enroll_listen is not None:
        enroll_host = config.enroll_listen.rsplit(":", 1)[0]
        print(f"posture-collector enrollment on {enroll_host}:{built.enroll_port}", flush=True)
    if endpoint is not None:
        print(f"posture-collector metrics on {endpoint.url}", flush=True)
    web = None
    if config.http_listen is not None:
        web = await start_http(create_app(service, worker), config.http_listen)
        print(f"posture-collector dashboard on {web.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health.enter_graceful_shutdown()
    if web is not None:
        await web.stop()
    await server.stop(config.grace_seconds)
    revocations.cancel()
    worker.shutdown(wait=True)
    if endpoint is not None:
        endpoint.stop()
