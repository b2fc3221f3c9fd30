"""Load generator: N simulated agents against a real ``posture-collector serve`` process.

    .venv/bin/python -m benchmarks.loadgen --agents 2000 --cadence 12 --duration 60

Time is compressed: 2,000 agents reporting every 12 s offer the collector the report rate
of 50,000 agents at the real 5-minute cadence (about 170 reports/s). The agents run in
``--processes`` worker processes (asyncio, one TLS connection per agent; ``simagents``),
enroll, send a full first report, then report their changes on the cadence. Measured:
ingest throughput, ack latency and report -> score latency (p50/p99), the collector's CPU
and RSS (psutil on its process), and the database's size per host and growth per report.
Each simulated agent resumes its own TLS sessions as a daemon does (``--no-resume``: a full
handshake per report, as before session resumption).
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from agent.collect import TableResult
from benchmarks.common import CollectorProcess, median, percentile
from benchmarks.fleet import machine_facts
from benchmarks.simagents import (
    Enrolled,
    FirstReports,
    SteadyResult,
    SteadySpec,
    enroll_and_report,
    run_steady,
)

__all__ = ["LoadResult", "main", "run_load"]

#: The real cadence the compressed one stands for: 5 minutes.
REAL_CADENCE_SECONDS = 300.0


@dataclass(frozen=True)
class LoadResult:
    agents: int
    cadence: float
    duration: float
    persistent: bool
    resume: bool
    offered_per_second: float
    reports_per_second: float
    ack_p50: float
    ack_p99: float
    report_p50: float
    report_p99: float
    score_p50: float
    score_p99: float
    flips_unseen: int
    collector_cpu_percent: float
    collector_rss_mb: float
    rss_before_mb: float
    loadgen_cpu_percent: float
    db_bytes_per_host: float
    growth_bytes_per_report: float
    first_report_p50: float
    first_reports_per_second: float
    first_report_bytes: float
    delta_report_bytes: float
    #: Streams whose TLS session was resumed, and all streams, in the phase (the
    #: collector's ``posture_stream_tls_sessions`` metric).
    resumed_streams: int = 0
    streams: int = 0
    #: The collector's CPU (percent of a core) by thread group (``_thread_group``).
    collector_cpu_by_thread: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def equivalent_agents(self) -> float:
        """Agents at the real 5-minute cadence that would offer the same report rate."""
        return self.offered_per_second * REAL_CADENCE_SECONDS

    @property
    def growth_per_host_day_mb(self) -> float:
        return self.growth_bytes_per_report * (86_400 / REAL_CADENCE_SECONDS) / 1e6


def _thread_group(pid: int, tid: int) -> str:
    """Which part of the collector a thread is: the asyncio event loop (the main thread),
    gRPC's core (``event_engine``: sockets, TLS, HTTP/2), or the rest (the writer thread,
    the metrics server)."""
    if tid == pid:
        return "event loop"
    try:
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:  # the thread ended
        name = ""
    return "grpc core" if name.startswith(("event_engine", "grpc")) else "writer and other"


class _Sampler:
    """Samples a process's CPU time and RSS once a second, in a thread."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.rss: list[float] = []
        self._cpu_start = self._cpu()
        self._threads_start = self._threads()
        self._wall_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _cpu(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def _threads(self) -> dict[int, tuple[str, float]]:
        pid = self._process.pid
        return {
            t.id: (_thread_group(pid, t.id), t.user_time + t.system_time)
            for t in self._process.threads()
        }

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.rss.append(self._process.memory_info().rss / 2**20)

    def stop(self) -> tuple[float, float, dict[str, float]]:
        """(CPU percent of one core over the sampling, peak RSS MB, CPU percent by thread
        group)."""
        self._stop.set()
        self._thread.join()
        cpu = self._cpu() - self._cpu_start
        threads = self._threads()
        wall = time.perf_counter() - self._wall_start
        self.rss.append(self._process.memory_info().rss / 2**20)
        groups: dict[str, float] = {}
        for tid, (group, seconds) in threads.items():
            spent = seconds - self._threads_start.get(tid, (group, 0.0))[1]
            groups[group] = groups.get(group, 0.0) + spent
        by_group = {group: 100 * seconds / wall for group, seconds in groups.items()}
        return 100 * cpu / wall, max(self.rss), by_group


def _db_bytes(db: Path) -> int:
    """Bytes of live pages a reader sees (the WAL included), free pages excluded."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tls_sessions(metrics_url: str) -> Counter[str]:
    """The collector's streams so far by TLS session: {"resumed": n, "full": n}."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "posture_stream_tls_sessions_total":
                counts[sample.labels["session"]] += int(sample.value)
    return counts


def _chunks(items: Sequence[int], parts: int) -> list[list[int]]:
    return [list(items[part::parts]) for part in range(parts) if items[part::parts]]


@contextmanager
def _workers(processes: int) -> Iterator[ProcessPoolExecutor]:
    # spawn, not fork: grpc's threads do not survive a fork.
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        yield pool


def _first_reports(
    pool: ProcessPoolExecutor,
    collector: CollectorProcess,
    base: dict[str, TableResult],
    agents: int,
    processes: int,
    first_report: bool,
) -> tuple[list[Enrolled], str, list[float], float, int, Counter[str]]:
    assert collector.pki is not None
    ca = collector.pki.ca_cert.read_bytes()
    secret = collector.enroll_secret()
    started = time.perf_counter()
    futures = [
        pool.submit(enroll_and_report, collector.address, ca, secret, base, chunk, 16, first_report)
        for chunk in _chunks(range(agents), processes)
    ]
    parts: list[FirstReports] = [future.result() for future in futures]
    elapsed = time.perf_counter() - started
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
    enrolled = [agent for part in parts for agent in part.enrolled]
    seconds = [s for part in parts for s in part.report_seconds]
    wire = sum(part.wire_bytes for part in parts)
    return enrolled, parts[0].plan_version, seconds, elapsed, wire, errors


def run_load(
    agents: int,
    cadences: Sequence[float],
    duration: float,
    *,
    processes: int = 1,
    persistent: bool = False,
    resume: bool = True,
    workdir: Path | None = None,
    base: dict[str, TableResult] | None = None,
    first_report: bool = True,
) -> list[LoadResult]:
    """Start a collector, enroll ``agents``, then load it at each cadence in turn for
    ``duration`` seconds; one result per cadence. Without ``first_report`` the agents only
    enroll before the phases (to measure open connections rather than ingest)."""
    base = base or machine_facts()
    metrics = f"127.0.0.1:{_free_port()}"
    with (
        tempfile.TemporaryDirectory(prefix="posture-load-") as scratch,
        CollectorProcess(
            workdir or Path(scratch), extra=["--metrics-listen", metrics]
        ) as collector,
        _workers(processes) as pool,
    ):
        assert collector.process is not None and collector.pki is not None
        enrolled, version, first, first_elapsed, first_wire, errors = _first_reports(
            pool, collector, base, agents, processes, first_report
        )
        rss_before = psutil.Process(collector.process.pid).memory_info().rss / 2**20
        spec = SteadySpec(
            address=collector.address,
            ca_cert=collector.pki.ca_cert.read_bytes(),
            db_path=collector.db,
            base=base,
            agents=[],
            plan_version=version,
            cadences=tuple(cadences),
            duration=duration,
            # Persistent streams, or the agents' first TLS sessions, are all opened first:
            # about 2 ms each on this machine.
            start_at=time.time() + 3.0 + (agents / 250 if persistent or resume else 0.0),
            persistent=persistent,
            resume=resume,
        )
        futures = [
            pool.submit(run_steady, replace(spec, agents=enrolled[part::processes]))
            for part in range(processes)
        ]
        url = f"http://{metrics}/metrics"
        watched = [_watch_phase(spec, phase, collector, url) for phase in range(len(cadences))]
        parts: list[list[SteadyResult]] = [future.result() for future in futures]
    first_reports = _FirstReportStats(first, first_elapsed, first_wire, errors)
    return [
        _summarise(
            len(enrolled),
            spec,
            phase,
            [part[phase] for part in parts],
            watched[phase],
            rss_before,
            first_reports,
        )
        for phase in range(len(cadences))
    ]


@dataclass(frozen=True)
class _PhaseWatch:
    cpu_percent: float
    rss_peak_mb: float
    db_before: int
    db_after: int
    tls_sessions: Counter[str]
    cpu_by_thread: dict[str, float]


@dataclass(frozen=True)
class _FirstReportStats:
    seconds: list[float]
    elapsed: float
    wire_bytes: int
    errors: Counter[str]


def _watch_phase(
    spec: SteadySpec, phase: int, collector: CollectorProcess, metrics_url: str
) -> _PhaseWatch:
    """Sample the collector's CPU, RSS, database and streams during one phase (in this
    process)."""
    assert collector.process is not None
    time.sleep(max(0.0, spec.phase_start(phase) - time.time()))
    db_before, sessions_before = _db_bytes(collector.db), _tls_sessions(metrics_url)
    sampler = _Sampler(collector.process.pid)
    time.sleep(spec.duration)
    cpu_percent, rss_peak, by_thread = sampler.stop()
    time.sleep(spec.gap / 2)  # the phase's last reports are acknowledged by now
    sessions = _tls_sessions(metrics_url)
    sessions.subtract(sessions_before)
    db_after = _db_bytes(collector.db)
    return _PhaseWatch(cpu_percent, rss_peak, db_before, db_after, sessions, by_thread)


def _summarise(
    agents: int,
    spec: SteadySpec,
    phase: int,
    parts: list[SteadyResult],
    watch: _PhaseWatch,
    rss_before: float,
    first: _FirstReportStats,
) -> LoadResult:
    acks = [s for part in parts for s in part.ack_seconds]
    reports = [s for part in parts for s in part.report_seconds]
    scores = [s for part in parts for s in part.score_seconds]
    count = sum(part.reports for part in parts)
    wall = max(part.wall_seconds for part in parts)
    errors = Counter(first.errors)
    for part in parts:
        errors.update(part.errors)
    cadence = spec.cadences[phase]
    return LoadResult(
        agents=agents,
        cadence=cadence,
        duration=spec.duration,
        persistent=spec.persistent,
        resume=spec.resume,
        offered_per_second=agents / cadence,
        reports_per_second=count / wall,
        ack_p50=median(acks),
        ack_p99=percentile(acks, 0.99),
        report_p50=median(reports),
        report_p99=percentile(reports, 0.99),
        score_p50=median(scores),
        score_p99=percentile(scores, 0.99),
        flips_unseen=sum(part.flips_unseen for part in parts),
        collector_cpu_percent=watch.cpu_percent,
        collector_rss_mb=watch.rss_peak_mb,
        rss_before_mb=rss_before,
        loadgen_cpu_percent=100 * sum(part.cpu_seconds for part in parts) / wall,
        db_bytes_per_host=watch.db_after / max(1, agents),
        growth_bytes_per_report=(watch.db_after - watch.db_before) / max(1, count),
        first_report_p50=median(first.seconds),
        first_reports_per_second=len(first.seconds) / max(first.elapsed, 1e-9),
        first_report_bytes=first.wire_bytes / max(1, len(first.seconds)),
        delta_report_bytes=sum(part.wire_bytes for part in parts) / max(1, count),
        resumed_streams=watch.tls_sessions["resumed"],
        streams=watch.tls_sessions.total(),
        collector_cpu_by_thread=watch.cpu_by_thread,
        errors=dict(errors),
    )


def _ms_per_report(result: LoadResult) -> float:
    """The collector's CPU per report ingested, in ms (all threads)."""
    return 10 * result.collector_cpu_percent / max(result.reports_per_second, 1e-9)


def describe(result: LoadResult) -> str:
    """The result as the lines an operator reads."""
    mode = "one stream held open per agent" if result.persistent else "one stream per report"
    if not result.persistent:
        mode += ", TLS sessions resumed" if result.resume else ", a full TLS handshake each"
    return "\n".join(
        [
            f"{result.agents} agents every {result.cadence:g}s for {result.duration:g}s ({mode});"
            f" offered {result.offered_per_second:.0f} reports/s"
            f" = {result.equivalent_agents:,.0f} agents at a 5-minute cadence",
            f"  first reports: {result.first_reports_per_second:.0f}/s,"
            f" p50 {1000 * result.first_report_p50:.0f} ms,"
            f" {result.first_report_bytes / 1024:.0f} KB each",
            f"  ingest {result.reports_per_second:.0f} reports/s;"
            f" ack p50 {1000 * result.ack_p50:.1f} ms p99 {1000 * result.ack_p99:.1f} ms;"
            f" connect+report p99 {1000 * result.report_p99:.1f} ms;"
            f" report->score p50 {1000 * result.score_p50:.0f} ms"
            f" p99 {1000 * result.score_p99:.0f} ms ({result.flips_unseen} unseen)",
            f"  collector CPU {result.collector_cpu_percent:.0f}% of a core,"
            f" RSS {result.rss_before_mb:.0f} MB before, {result.collector_rss_mb:.0f} MB peak;"
            f" load generator CPU {result.loadgen_cpu_percent:.0f}%;"
            f" {result.resumed_streams} of {result.streams} streams resumed TLS sessions",
            "  collector CPU by thread: "
            + ", ".join(
                f"{group} {percent:.0f}%"
                for group, percent in sorted(result.collector_cpu_by_thread.items())
            )
            + f"; {_ms_per_report(result):.2f} ms of collector CPU per report",
            f"  database {result.db_bytes_per_host / 1024:.0f} KB per host;"
            f" {result.growth_bytes_per_report:.0f} B per report"
            f" = {result.growth_per_host_day_mb:.2f} MB per host per day;"
            f" delta report {result.delta_report_bytes / 1024:.1f} KB;"
            f" errors {result.errors or 'none'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument(
        "--cadence",
        type=float,
        action="append",
        help="seconds between an agent's reports (repeat for phases; default 12)",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--persistent", action="store_true", help="hold one stream open per agent throughout"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="a full TLS handshake per report (no resumption)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the collector's files here")
    parser.add_argument(
        "--no-first-report", action="store_true", help="only enroll before the phases"
    )
    args = parser.parse_args(argv)
    results = run_load(
        args.agents,
        args.cadence or [12.0],
        args.duration,
        processes=args.processes,
        persistent=args.persistent,
        resume=not args.no_resume,
        workdir=args.workdir,
        first_report=not args.no_first_report,
    )
    for result in results:
        print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
