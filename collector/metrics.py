"""Operator metrics for the collector, exposed in Prometheus' text format over HTTP.

What an operator needs to see that the collector keeps up and the fleet reports: how many
reports arrive (a counter; ``rate()`` gives reports/s), how long an agent waits for its ack
and how long evaluation takes (histograms), how many streams are open, how many hosts are
enrolled and stale, the errors answered by gRPC status code, and how deep the agents' spools
are (a growing spool means hosts that cannot deliver), and what the limits refused.

Everything lives in one ``CollectorRegistry`` per collector rather than prometheus-client's
process-wide default, so tests and benchmarks can run several collectors in one process.
Host counts are read when Prometheus scrapes, on a connection of their own, so a scrape never
waits for the ingest worker and ingest never waits for a scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from threading import Thread
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collector.policy.evaluate import Evaluator, FactSource
from collector.policy.model import Check, CheckResult
from collector.service import STALE_AFTER_INTERVALS, PostureService

__all__ = [
    "CollectorMetrics",
    "HostCounts",
    "MetricsServer",
    "TimedEvaluator",
    "count_hosts",
    "instrument_evaluations",
    "parse_listen",
    "serve_metrics",
]

#: Ack latency buckets, in seconds: the target is p99 <= 250 ms (GOALS.md).
_ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Evaluation buckets: the target is <= 2 ms for a full evaluation of one host.
_EVALUATION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class HostCounts:
    enrolled: int
    stale: int


class _CountsStore(Protocol):
    def host_counts(self, now: datetime, stale_after_intervals: int) -> tuple[int, int]: ...


def count_hosts(store: _CountsStore, now: datetime) -> HostCounts:
    """Enrolled and stale hosts, by the service's rule: a host is stale when it never
    reported or has not for ``STALE_AFTER_INTERVALS`` of its collection intervals.

    Aggregate queries only: a scrape must stay cheap at 50,000 hosts, where building every
    ``Host`` record would take the better part of a second.
    """
    enrolled, stale = store.host_counts(now, STALE_AFTER_INTERVALS)
    return HostCounts(enrolled, stale)


class _ScrapeTimeGauges(Collector):
    """Gauges computed when scraped: host counts and the agents' reported spool depths."""

    def __init__(
        self, host_counts: Callable[[], HostCounts] | None, spooled: dict[int, int]
    ) -> None:
        self._host_counts = host_counts
        self._spooled = spooled

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._host_counts is not None:
            counts = self._host_counts()
            yield GaugeMetricFamily("posture_hosts_enrolled", "Enrolled hosts", counts.enrolled)
            yield GaugeMetricFamily(
                "posture_hosts_stale",
                f"Hosts that have not reported for {STALE_AFTER_INTERVALS} collection intervals",
                counts.stale,
            )
        depths = list(self._spooled.values())
        yield GaugeMetricFamily(
            "posture_agent_spooled_batches",
            "Batches waiting in agents' spools, by each agent's latest message, summed",
            sum(depths),
        )
        yield GaugeMetricFamily(
            "posture_agent_spooled_batches_max",
            "The deepest spool an agent reported in its last message",
            max(depths, default=0),
        )
        yield GaugeMetricFamily(
            "posture_agents_with_backlog",
            "Agents whose latest message said batches were waiting behind it",
            sum(1 for depth in depths if depth > 0),
        )


class CollectorMetrics:
    """The collector's metrics; the transport records into it, Prometheus scrapes it."""

    def __init__(self, host_counts: Callable[[], HostCounts] | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.reports = Counter(
            "posture_reports",
            "Batches received from agents, by outcome (stored, or a duplicate already stored)",
            ["outcome"],
            registry=registry,
        )
        self.enrollments = Counter("posture_enrollments", "Hosts enrolled", registry=registry)
        self.ack_latency = Histogram(
            "posture_ack_latency_seconds",
            "From a batch arriving to its ack being sent: queueing and storing (a durable commit)",
            buckets=_ACK_BUCKETS,
            registry=registry,
        )
        self.ingest_latency = Histogram(
            "posture_ingest_seconds",
            "A batch's share of its commit group's writer time: storing and re-evaluating",
            buckets=_ACK_BUCKETS,
            registry=registry,
        )
        self.evaluation_latency = Histogram(
            "posture_evaluation_seconds",
            "Time to evaluate one host's checks (all of them, or those a delta touched)",
            buckets=_EVALUATION_BUCKETS,
            registry=registry,
        )
        self.open_streams = Gauge(
            "posture_open_streams", "Agent streams open now", registry=registry
        )
        self.streams = Counter(
            "posture_streams",
            "Agent streams authenticated and opened (agents reconnect once per collection)",
            registry=registry,
        )
        self.tls_sessions = Counter(
            "posture_stream_tls_sessions",
            "Agent streams (before authentication), by how their connection's TLS session"
            " began: resumed (a session ticket, no certificate exchange) or full (a complete"
            " handshake)",
            ["session"],
            registry=registry,
        )
        self.errors = Counter(
            "posture_rpc_errors",
            "Calls the collector ended with an error, by method and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self.limited = Counter(
            "posture_limited",
            "Requests refused by a limit (RESOURCE_EXHAUSTED), by limit: host_batches,"
            " host_bytes, enrollments, streams",
            ["limit"],
            registry=registry,
        )
        self.replaced_streams = Counter(
            "posture_streams_replaced",
            "Streams ended because a newer stream of the same host opened (a reconnect, or"
            " two agents sharing one identity when it keeps growing)",
            registry=registry,
        )
        self.renewals = Counter(
            "posture_certificate_renewals", "Client certificates renewed", registry=registry
        )
        self._spooled: dict[int, int] = {}
        registry.register(_ScrapeTimeGauges(host_counts, self._spooled))

    def agent_spool(self, host_id: int, spooled_batches: int) -> None:
        """Remember the spool depth a host's agent reported in its latest message."""
        self._spooled[host_id] = spooled_batches


class TimedEvaluator(Evaluator):
    """An ``Evaluator`` that records each evaluation's duration in a histogram."""

    def __init__(self, source: FactSource, checks: Sequence[Check], histogram: Histogram) -> None:
        super().__init__(source, checks)
        self._histogram = histogram

    def evaluate(
        self,
        host_id: int,
        platform: str,
        table_status: Mapping[str, str | None],
        only_tables: Collection[str] | None = None,
    ) -> list[CheckResult]:
        started = time.perf_counter()
        try:
            return super().evaluate(host_id, platform, table_status, only_tables)
        finally:
            self._histogram.observe(time.perf_counter() - started)


def instrument_evaluations(service: PostureService, metrics: CollectorMetrics) -> None:
    """Swap the service's evaluator for a timed one over the same store and checks.

    The service builds its evaluator itself and offers no hook; until it does, the
    transport replaces it once, before serving, while no evaluation can be running.
    """
    timed = TimedEvaluator(
        service.store.fact_source(), list(service.checks.values()), metrics.evaluation_latency
    )
    service.evaluator.close()
    service.evaluator = timed


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) -> (host, port); ValueError if malformed."""
    host, separator, port = listen.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"metrics address {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass
class MetricsServer:
    """The HTTP endpoint serving ``/metrics``; ``port`` is the bound one."""

    http: WSGIServer
    thread: Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=5)


def serve_metrics(metrics: CollectorMetrics, listen: str) -> MetricsServer:
    """Serve the metrics over HTTP on ``listen`` (port 0 picks a free one) in a thread."""
    host, port = parse_listen(listen)
    http, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(http, thread, host, http.server_port)
