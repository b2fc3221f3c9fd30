"""Ingest cost in-process: what one delta report costs the collector's writer thread.

    .venv/bin/python -m benchmarks.ingest --hosts 200 --rounds 5
    .venv/bin/python -m benchmarks --only ingest

No gRPC and no network: a ``PostureService`` on a real SQLite file (synchronous=FULL, WAL,
as ``serve`` runs it) stores each simulated host's full first report, then every host
reports its changes round after round, made exactly as the load generator makes them
(``benchmarks.fleet``: 5 % of processes replaced every report, a package upgrade in 1 %,
a listening port in 5 %, a user in 0.2 %, one agent in ten flipping a check every third
report). Deltas go through what the collector's writer thread runs for them
(``collector.transport.group_commit``): ``store_batches`` (facts, fact history, drift, one
commit) then ``evaluate_stored`` (checks, results), one at a time and then several per
commit, as the writer takes them when they queue. Time per delta is the number that bounds
throughput: one writer thread at ``d`` ms per delta ingests at most ``1000 / d`` reports/s.
A round's figure is its mean; the table gives the median round (the machine is shared),
split between storing and evaluating, and the thread's CPU beside its wall time (the
difference is waiting: fsync, and other processes on the machine).

``--profile`` runs one more round under pyinstrument and prints where the time goes;
``--synchronous OFF`` shows what the commits' fsyncs cost (``serve`` runs FULL).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import POLICIES, Measure, measure, median, percentile, print_table
from benchmarks.fleet import ChangeRates, FleetBase, SimulatedHost, machine_facts
from collector.model import FactBatch, Host, HostIdentity, IngestOutcome, TableFacts
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore

__all__ = [
    "IngestRun",
    "enroll_agents",
    "ingest_measures",
    "ingest_round",
    "main",
    "run_ingest",
    "writer_service",
]

#: One agent in ``FLIP_SAMPLE`` flips its check every ``FLIP_EVERY`` reports (as loadgen).
FLIP_SAMPLE, FLIP_EVERY = 10, 3
#: Deltas per commit measured by default: one, and what a busy writer typically takes.
GROUPS = (1, 8)


@dataclass
class _Agent:
    host: Host
    simulated: SimulatedHost
    rng: random.Random
    seq: int = 1


@dataclass
class IngestRun:
    """Per group size, per round, per delta: ms through the writer (store, commit,
    evaluate), the storing part of it, and the writer thread's CPU ms."""

    first_report_ms: list[float] = field(default_factory=list)
    delta_ms: dict[int, list[list[float]]] = field(default_factory=dict)
    store_ms: dict[int, list[list[float]]] = field(default_factory=dict)
    cpu_ms: dict[int, list[list[float]]] = field(default_factory=dict)
    rows_per_delta: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Round:
    totals: list[float]
    stores: list[float]
    cpu: list[float]
    rows: int


def _means(rounds: list[list[float]]) -> list[float]:
    return [sum(r) / len(r) for r in rounds if r]


def _batch(agent: _Agent, tables: set[str]) -> FactBatch:
    simulated = agent.simulated
    changed = [
        TableFacts(name, simulated.table(name).rows, simulated.table(name).error)
        for name in sorted(tables)
    ]
    return FactBatch(agent.seq, datetime.now(UTC), changed, simulated.digests())


def enroll_agents(
    service: PostureService, base: FleetBase, count: int
) -> tuple[list[_Agent], float]:
    """Enroll ``count`` hosts and ingest each one's first full report; returns the agents
    and the median ms of a first report."""
    _, secret = service.create_enroll_secret("bench-ingest")
    agents, timings = [], []
    for index in range(count):
        simulated = SimulatedHost.derived(index, base)
        host = service.enroll(secret, HostIdentity(**simulated.identity())).host
        agent = _Agent(host, simulated, random.Random(index))
        started = time.perf_counter()
        service.ingest(host, _batch(agent, set(base.tables)))
        timings.append(1000 * (time.perf_counter() - started))
        agents.append(agent)
    return agents, median(timings)


def _delta(agent: _Agent, rates: ChangeRates) -> FactBatch:
    """The agent's next report, changed as the load generator changes it."""
    agent.seq += 1
    changed = agent.simulated.advance(agent.rng, rates)
    if agent.simulated.index % FLIP_SAMPLE == 0 and agent.seq % FLIP_EVERY == 0:
        agent.simulated.flip()
        changed.add("users")
    return _batch(agent, changed)


def _outcome(outcome: IngestOutcome | Exception) -> IngestOutcome:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def ingest_round(service: PostureService, agents: list[_Agent], group: int) -> _Round:
    """One delta per agent, ``group`` at a time, as the writer thread takes them: store
    with one commit, then evaluate; each delta is charged its share of its group's time."""
    rates = ChangeRates()
    totals, stores, cpu, rows = [], [], [], 0
    for first in range(0, len(agents), group):
        batches = [(agent.host, _delta(agent, rates)) for agent in agents[first : first + group]]
        rows += sum(len(table.rows) for _, batch in batches for table in batch.changed)
        started, started_cpu = time.perf_counter(), time.thread_time()
        outcomes = service.store_batches(batches)
        stored = time.perf_counter()
        service.evaluate_stored(
            [
                (host, _outcome(outcome))
                for (host, _), outcome in zip(batches, outcomes, strict=True)
            ]
        )
        share = 1000 / len(batches)
        totals += [share * (time.perf_counter() - started)] * len(batches)
        stores += [share * (stored - started)] * len(batches)
        cpu += [share * (time.thread_time() - started_cpu)] * len(batches)
    return _Round(totals, stores, cpu, rows // max(1, len(agents)))


@contextmanager
def writer_service(scratch: Path, synchronous: str) -> Iterator[PostureService]:
    store = SqliteStore(scratch / "collector.db")
    store.conn.execute(f"PRAGMA synchronous={synchronous}")
    service = PostureService(store, load_packs(POLICIES))
    try:
        yield service
    finally:
        service.close()
        store.close()


def run_ingest(
    hosts: int,
    rounds: int,
    groups: tuple[int, ...] = GROUPS,
    profile: Callable[[Callable[[], object]], None] | None = None,
    synchronous: str = "FULL",
) -> IngestRun:
    """Seed ``hosts`` hosts, then per group size ``rounds`` rounds of one delta per host."""
    base = FleetBase.from_tables(machine_facts())
    run = IngestRun()
    with (
        tempfile.TemporaryDirectory(prefix="posture-ingest-") as scratch,
        writer_service(Path(scratch), synchronous) as service,
    ):
        agents, first = enroll_agents(service, base, hosts)
        run.first_report_ms.append(first)
        for group in groups:
            for _ in range(rounds):
                result = ingest_round(service, agents, group)
                run.delta_ms.setdefault(group, []).append(result.totals)
                run.store_ms.setdefault(group, []).append(result.stores)
                run.cpu_ms.setdefault(group, []).append(result.cpu)
                run.rows_per_delta.append(result.rows)
        if profile is not None:
            profile(lambda: ingest_round(service, agents, groups[-1]))
    return run


def ingest_measures(
    hosts: int, rounds: int, groups: tuple[int, ...] = GROUPS, synchronous: str = "FULL"
) -> list[Measure]:
    run = run_ingest(hosts, rounds, groups, synchronous=synchronous)
    measures = [
        measure(f"first (full) report, {hosts} hosts stored", run.first_report_ms, "ms"),
        measure("rows in a delta's changed tables", list(map(float, run.rows_per_delta)), "rows"),
    ]
    for group in groups:
        measures += _group_measures(run, group)
    return measures


def _group_measures(run: IngestRun, group: int) -> list[Measure]:
    means = _means(run.delta_ms[group])
    stores = _means(run.store_ms[group])
    every = [ms for r in run.delta_ms[group] for ms in r]
    at = "one delta per commit" if group == 1 else f"{group} deltas per commit"
    return [
        measure(f"{at}: writer ms per delta (mean of a round)", means, "ms", 5.0),
        measure(f"{at}: of which storing (facts, history, drift, commit)", stores, "ms"),
        measure(f"{at}: of which evaluating (checks, results)",
                [t - s for t, s in zip(means, stores, strict=True)], "ms"),
        measure(f"{at}: writer thread CPU per delta (the rest waits: fsync, the machine)",
                _means(run.cpu_ms[group]), "ms"),
        measure(f"{at}: p99 per delta (all rounds)", [percentile(every, 0.99)], "ms"),
        measure(f"{at}: one writer's ceiling (1000 / ms per delta)", [1000 / m for m in means],
                "reports/s", target_text=">= 170 reports/s"),
    ]  # fmt: skip


def _pyinstrument(work: Callable[[], object]) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    work()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--group", type=int, action="append", help="deltas per commit (repeatable; 1 and 8)"
    )
    parser.add_argument("--profile", action="store_true", help="profile one more round")
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL", "OFF"),
        default="FULL",
        help="SQLite's synchronous setting (serve runs FULL; OFF shows what fsync costs)",
    )
    args = parser.parse_args(argv)
    groups = tuple(args.group or GROUPS)
    if args.profile:
        run_ingest(args.hosts, 1, groups, _pyinstrument, args.synchronous)
        return 0
    print_table(
        f"Ingest in-process ({args.hosts} hosts, {args.rounds} rounds of a delta per host"
        f" for each group size, synchronous={args.synchronous})",
        ingest_measures(args.hosts, args.rounds, groups, args.synchronous),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
