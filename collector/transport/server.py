"""grpc.aio server wiring: TLS, limits, health checking, reflection and metrics.

Shaped like grpc's own ``examples/python``: build the server, register servicers, start,
wait, and stop with a grace period on SIGTERM so open streams finish their current batch.
With ``metrics_listen`` set, Prometheus metrics are served over plain HTTP on that address
(``collector.metrics``); they hold no secrets, but bind it to a management network. With
``http_listen`` set, the dashboard and JSON API (``collector.web``) share the event loop and
the store's worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from collector.metrics import (
    CollectorMetrics,
    MetricsServer,
    count_hosts,
    instrument_evaluations,
    serve_metrics,
)
from collector.service import PostureService
from collector.transport.servicer import AgentServicer
from collector.web.app import create_app
from collector.web.serve import start_http
from protos.posture.v1 import agent_pb2, agent_pb2_grpc

__all__ = ["ServerConfig", "build_server", "run_server", "start_metrics"]

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


def _options(config: ServerConfig) -> list[tuple[str, int]]:
    """Hardening from reliability-security.md §4: bounded messages, pings and idle links."""
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_concurrent_streams", 16),
        ("grpc.keepalive_time_ms", 3_600_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", 15 * 60_000),
    ]


def _raise_file_limit() -> None:
    """Each open stream holds a descriptor; the default 1,024 stalls near 1,000 agents."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_server(
    service: PostureService,
    worker: ThreadPoolExecutor,
    config: ServerConfig,
    metrics: CollectorMetrics | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """A ready-to-start server; returns it with the bound port (0 in ``listen`` picks one).

    Calls are recorded in ``metrics`` (a private, unserved set when None).
    """
    server = grpc.aio.server(options=_options(config))
    servicer = AgentServicer(service, worker, metrics or CollectorMetrics())
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
    credentials = grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
    )
    port = server.add_secure_port(config.listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    return server, port, health


def start_metrics(service: PostureService, listen: str) -> tuple[CollectorMetrics, MetricsServer]:
    """Metrics for ``service``, evaluation timings included, served on ``listen``."""
    metrics = CollectorMetrics(lambda: count_hosts(service.store.path, service.clock()))
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
    server, port, health = build_server(service, worker, config, metrics)
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = config.listen.rsplit(":", 1)[0]
    log.info("collector listening on %s:%s (TLS)", host, port)
    print(f"posture-collector listening on {host}:{port}", flush=True)
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
    worker.shutdown(wait=True)
    if endpoint is not None:
        endpoint.stop()
