"""Scale-out: one collector on SQLite, then one, two and three sharing one PostgreSQL.

    .venv/bin/python -m benchmarks.scaleout --agents 400 --cadence 2 --duration 30

Every configuration gets the same simulated fleet (``simagents``: real gRPC streams with
TLS, enrollment, a full first report, then changes on the cadence) through one address. The
collectors of a configuration all listen on that one port (``SO_REUSEPORT``, gRPC's default
on Linux), so the kernel spreads the agents' connections over them as a TCP load balancer
would. PostgreSQL is a private server started here (``benchmarks/pgserver.py``) with its
durability on (``fsync``, ``synchronous_commit``): an acknowledged batch is on disk, as with
SQLite's ``synchronous=FULL``. Each configuration runs on a fresh database.

Reported per configuration: ingest throughput (reports/s acknowledged), ack latency and
report -> updated score latency (p50/p99), and the CPU of the collectors (summed) and of
PostgreSQL. Offer more than one collector can take (a short cadence) to compare capacity;
on a machine with fewer cores than collectors + PostgreSQL + load generator, the figures
show the machine's limit rather than the design's, and say so (the CPU columns).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psutil
import psycopg

from agent.collect import TableResult
from benchmarks import simagents
from benchmarks.common import ROOT, median, percentile
from benchmarks.fleet import FLIP_CHECK, machine_facts
from benchmarks.pgserver import PostgresServer, PostgresUnavailable
from benchmarks.simagents import SteadyResult, SteadySpec, enroll_and_report, run_steady
from collector.tls import LocalPki, ensure_local_pki

__all__ = ["Config", "ScaleResult", "main", "run_scaleout"]

POLICIES = ROOT / "policies"


@dataclass(frozen=True)
class Config:
    engine: str  # "sqlite" or "postgresql"
    collectors: int

    @property
    def label(self) -> str:
        return f"{self.collectors} collector{'s' if self.collectors > 1 else ''}, {self.engine}"


CONFIGS = (Config("sqlite", 1), Config("postgresql", 1), Config("postgresql", 2),
           Config("postgresql", 3))  # fmt: skip


@dataclass(frozen=True)
class ScaleResult:
    config: Config
    agents: int
    offered_per_second: float
    reports_per_second: float
    ack_p50: float
    ack_p99: float
    score_p50: float
    score_p99: float
    collectors_cpu_percent: float
    postgres_cpu_percent: float
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class _Collector:
    database: str
    pki: LocalPki
    log: Path
    process: subprocess.Popen[bytes] | None = None
    address: str = ""

    def start(self, port: int) -> int:
        command = [
            sys.executable, "-m", "collector", "serve", "--db", self.database,
            "--listen", f"127.0.0.1:{port}", "--tls-cert", str(self.pki.server_cert),
            "--tls-key", str(self.pki.server_key), "--policies", str(POLICIES),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"collector did not start; see {self.log}")
        self.address = line.rsplit(" ", 1)[1].strip()
        return int(self.address.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def _cluster(database: str, count: int, workdir: Path) -> Iterator[list[_Collector]]:
    pki = ensure_local_pki(workdir / "tls")
    collectors = [_Collector(database, pki, workdir / f"collector-{i}.log") for i in range(count)]
    try:
        port = collectors[0].start(0)
        for collector in collectors[1:]:
            collector.start(port)
        yield collectors
    finally:
        for collector in collectors:
            collector.stop()


def _cli(database: str, *args: str) -> str:
    command = [sys.executable, "-m", "collector", *args, "--db", database,
               "--policies", str(POLICIES)]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()


class _CpuSampler:
    """CPU seconds of a set of processes (and their children) over an interval."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        self._start = self._total()
        self._wall = time.perf_counter()

    def _total(self) -> float:
        total = 0.0
        for process in self._processes:
            for each in (process, *process.children(recursive=True)):
                try:
                    times = each.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
        return total

    def percent(self) -> float:
        return 100 * (self._total() - self._start) / (time.perf_counter() - self._wall)


# Score latency on PostgreSQL ------------------------------------------------------------


class _PgScoreWatcher(simagents._ScoreWatcher):
    """``simagents``' watcher, polling PostgreSQL instead of the SQLite file."""

    url = ""

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.005):
                with self._lock:
                    pending = list(self._pending)
                for item in pending:
                    host_id, sent_at, status = item
                    row = conn.execute(
                        "SELECT status FROM results WHERE host_id = %s AND check_id = %s",
                        (host_id, FLIP_CHECK),
                    ).fetchone()
                    if row and row[0] == status:
                        seen = time.perf_counter()
                        with self._lock:
                            self._pending.remove(item)
                        self.seconds.append(seen - sent_at)


def _run_steady_on(spec: SteadySpec, url: str | None) -> list[SteadyResult]:
    """``run_steady`` in a worker, watching scores on PostgreSQL when ``url`` is set."""
    if url is not None:
        _PgScoreWatcher.url = url
        simagents._ScoreWatcher = _PgScoreWatcher  # type: ignore[misc]
    return run_steady(spec)


# One configuration ----------------------------------------------------------------------


def _run_config(
    config: Config,
    database: str,
    postgres_pid: int | None,
    base: dict[str, TableResult],
    sizes: argparse.Namespace,
    workdir: Path,
) -> ScaleResult:
    with (
        _cluster(database, config.collectors, workdir) as collectors,
        ProcessPoolExecutor(sizes.processes, mp_context=get_context("spawn")) as pool,
    ):
        address = collectors[0].address
        ca = collectors[0].pki.ca_cert.read_bytes()
        secret = _cli(database, "enroll-secret", "create", "bench")
        chunks = [list(range(sizes.agents))[i :: sizes.processes] for i in range(sizes.processes)]
        firsts = [
            pool.submit(
                enroll_and_report, address, ca, secret, base, chunk, sizes.concurrency, True
            )
            for chunk in chunks
        ]
        parts = [future.result() for future in firsts]
        enrolled = [agent for part in parts for agent in part.enrolled]
        spec = SteadySpec(
            address=address,
            ca_cert=ca,
            db_path=Path(database) if config.engine == "sqlite" else workdir / "unused.db",
            base=base,
            agents=[],
            plan_version=min(p.plan_version for p in parts),
            cadences=(sizes.cadence,),
            duration=sizes.duration,
            start_at=time.time() + 3.0,
        )
        url = database if config.engine == "postgresql" else None
        futures = [
            pool.submit(_run_steady_on, replace(spec, agents=enrolled[i :: sizes.processes]), url)
            for i in range(sizes.processes)
        ]
        time.sleep(max(0.0, spec.start_at - time.time()))
        pids = [c.process.pid for c in collectors if c.process is not None]
        collectors_cpu = _CpuSampler(pids)
        postgres_cpu = _CpuSampler([postgres_pid] if postgres_pid else [])
        time.sleep(sizes.duration)
        cpu = (collectors_cpu.percent(), postgres_cpu.percent() if postgres_pid else 0.0)
        results = [future.result()[0] for future in futures]
    return _summarise(config, len(enrolled), sizes.cadence, results, cpu, parts)


def _summarise(
    config: Config,
    agents: int,
    cadence: float,
    parts: list[SteadyResult],
    cpu: tuple[float, float],
    firsts: list[Any],
) -> ScaleResult:
    acks = [s for part in parts for s in part.ack_seconds]
    scores = [s for part in parts for s in part.score_seconds]
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
    for first in firsts:
        errors.update(first.errors)
    return ScaleResult(
        config=config,
        agents=agents,
        offered_per_second=agents / cadence,
        reports_per_second=sum(p.reports for p in parts) / max(p.wall_seconds for p in parts),
        ack_p50=median(acks),
        ack_p99=percentile(acks, 0.99),
        score_p50=median(scores) if scores else float("nan"),
        score_p99=percentile(scores, 0.99) if scores else float("nan"),
        collectors_cpu_percent=cpu[0],
        postgres_cpu_percent=cpu[1],
        errors=dict(errors),
    )


def run_scaleout(
    sizes: argparse.Namespace, configs: Sequence[Config] = CONFIGS
) -> list[ScaleResult]:
    """Run each configuration in turn; PostgreSQL ones are skipped (with a note on
    stderr) when no server can start here."""
    base = machine_facts()
    results = []
    with tempfile.TemporaryDirectory(prefix="posture-scaleout-") as scratch:
        server = None
        try:
            if any(config.engine == "postgresql" for config in configs):
                try:
                    server = PostgresServer(durable=True).start()
                except PostgresUnavailable as error:
                    print(f"PostgreSQL configurations skipped: {error}", file=sys.stderr)
            for number, config in enumerate(configs):
                workdir = Path(scratch) / f"run{number}"
                workdir.mkdir()
                if config.engine == "sqlite":
                    database, pid = str(workdir / "collector.db"), None
                elif server is not None:
                    database, pid = server.create_database(f"bench{number}"), _postmaster(server)
                else:
                    continue
                results.append(_run_config(config, database, pid, base, sizes, workdir))
        finally:
            if server is not None:
                server.stop()
    return results


def _postmaster(server: PostgresServer) -> int | None:
    assert server.directory is not None
    pid_file = server.directory / "data" / "postmaster.pid"
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def table(results: Sequence[ScaleResult]) -> str:
    """A Markdown table of the results, throughput relative to the first configuration."""
    lines = [
        "| configuration | agents | offered /s | ingest /s | vs first | ack p50 ms | ack p99 ms"
        " | score p50 ms | score p99 ms | collectors CPU % | PostgreSQL CPU % | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    first = results[0].reports_per_second if results else 1.0
    for r in results:
        lines.append(
            f"| {r.config.label} | {r.agents} | {r.offered_per_second:.0f}"
            f" | {r.reports_per_second:.0f} | {r.reports_per_second / first:.2f}"
            f" | {1000 * r.ack_p50:.1f} | {1000 * r.ack_p99:.1f}"
            f" | {1000 * r.score_p50:.0f} | {1000 * r.score_p99:.0f}"
            f" | {r.collectors_cpu_percent:.0f} | {r.postgres_cpu_percent:.0f}"
            f" | {_errors(r.errors)} |"
        )
    return "\n".join(lines)


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{count} {code}" for code, count in sorted(errors.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.add_argument("--agents", type=int, default=400)
    parser.add_argument("--cadence", type=float, default=2.0, help="seconds between reports")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="first reports in flight per process"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="configurations, e.g. sqlite:1 postgresql:3"
    )
    args = parser.parse_args(argv)
    configs: tuple[Config, ...] = CONFIGS
    if args.only:
        wanted = {tuple(item.split(":")) for item in args.only}
        configs = tuple(c for c in CONFIGS if (c.engine, str(c.collectors)) in wanted)
    print(table(run_scaleout(args, configs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
