"""Evaluation cost: the shipped packs against hosts in a real store, and how it grows.

Hosts are stored through the real service (``PostureService.ingest``) with facts derived from
this machine's (``benchmarks.fleet``); then the service's evaluator runs for each host:
every check (a full evaluation), and only the checks a typical delta touches (the processes
table, which changes in nearly every report). The shipped packs hold fewer than the 100
checks GOALS.md sizes its target for, so the same checks are also run copied up to 100+.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import POLICIES, Measure, measure, median
from benchmarks.fleet import FleetBase, SimulatedHost, machine_facts
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.evaluate import Evaluator
from collector.policy.loader import load_packs
from collector.policy.model import Check
from collector.service import PostureService
from collector.store import SqliteStore

__all__ = ["evaluation_measures", "seed_hosts"]

TYPICAL_DELTA = frozenset({"processes"})


def seed_hosts(service: PostureService, base: FleetBase, count: int) -> list[Host]:
    """Enroll ``count`` hosts and store each one's full first report (evaluated too)."""
    _, secret = service.create_enroll_secret("bench")
    hosts = []
    for index in range(count):
        simulated = SimulatedHost.derived(index, base)
        host = service.enroll(secret, HostIdentity(**simulated.identity())).host
        tables = [TableFacts(n, t.rows, t.error) for n, t in simulated.tables().items()]
        service.ingest(host, FactBatch(1, datetime.now(UTC), tables, simulated.digests()))
        hosts.append(host)
    return hosts


def _per_host_ms(
    evaluator: Evaluator, store: SqliteStore, hosts: Sequence[Host], only: frozenset[str] | None
) -> list[float]:
    timings = []
    for host in hosts:
        status = {name: (s.error or None) for name, s in store.table_states(host.id).items()}
        started = time.perf_counter()
        evaluator.evaluate(host.id, host.identity.platform, status, only)
        timings.append(1000 * (time.perf_counter() - started))
    return timings


def _copies(checks: Sequence[Check], at_least: int) -> list[Check]:
    """The checks repeated under new ids until there are ``at_least`` of them."""
    copies = list(checks)
    round_ = 1
    while len(copies) < at_least:
        copies += [dataclasses.replace(c, id=f"{c.id}.copy{round_}") for c in checks]
        round_ += 1
    return copies


def _evaluate_at(count: int, base: FleetBase, repeats: int) -> list[float]:
    """Full evaluation ms per host with ``count`` hosts in the store."""
    with tempfile.TemporaryDirectory(prefix="posture-eval-") as scratch:
        store = SqliteStore(Path(scratch) / "collector.db")
        service = PostureService(store, load_packs(POLICIES))
        sample = random.Random(0).sample(seed_hosts(service, base, count), min(count, 200))
        timings = [
            ms
            for _ in range(repeats)
            for ms in _per_host_ms(service.evaluator, store, sample, None)
        ]
        service.close()
        store.close()
    return timings


def evaluation_measures(host_counts: Sequence[int], repeats: int) -> list[Measure]:
    base = FleetBase.from_tables(machine_facts())
    packs = load_packs(POLICIES)
    linux = [c for pack in packs for c in pack.checks if "linux" in c.platforms]
    largest = max(host_counts)
    with tempfile.TemporaryDirectory(prefix="posture-eval-") as scratch:
        store = SqliteStore(Path(scratch) / "collector.db")
        service = PostureService(store, packs)
        hosts = seed_hosts(service, base, largest)
        sample = random.Random(0).sample(hosts, min(len(hosts), 200))
        runs = range(repeats)
        full = [ms for _ in runs for ms in _per_host_ms(service.evaluator, store, sample, None)]
        delta = [
            ms for _ in runs for ms in _per_host_ms(service.evaluator, store, sample, TYPICAL_DELTA)
        ]
        many = _copies(linux, 100)
        with Evaluator(store.path, many) as evaluator:
            hundred = [ms for _ in runs for ms in _per_host_ms(evaluator, store, sample, None)]
        slowest = _slowest_checks(store, linux, sample[:20])
        service.close()
        store.close()
    measures = [
        measure(f"full evaluation, shipped packs ({len(linux)} Linux checks), {largest} hosts",
                full, "ms/host"),
        measure(f"full evaluation, the same checks copied to {len(many)}", hundred, "ms/host", 2.0),
        measure("per check (full evaluation / checks)", [m / len(linux) for m in full], "ms"),
        measure("incremental re-evaluation after a processes delta", delta, "ms/host", 0.5),
    ]  # fmt: skip
    measures += [measure(f"slowest check: {check_id}", ms, "ms") for check_id, ms in slowest]
    for count in sorted(set(host_counts) - {largest}):
        timings = _evaluate_at(count, base, repeats)
        measures.append(measure(f"full evaluation, {count} hosts in the store", timings, "ms/host"))
    return measures


def _slowest_checks(
    store: SqliteStore, checks: Sequence[Check], hosts: Sequence[Host]
) -> list[tuple[str, list[float]]]:
    """The three most expensive checks, each timed alone over ``hosts``."""
    timings = []
    for check in checks:
        with Evaluator(store.path, [check]) as evaluator:
            timings.append((check.id, _per_host_ms(evaluator, store, hosts, None)))
    return sorted(timings, key=lambda item: -median(item[1]))[:3]
