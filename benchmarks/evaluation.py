"""Evaluation cost: the shipped packs against hosts in a real store, and how it grows.

Hosts are stored through the real service (``PostureService.ingest``) with facts derived from
this machine's (``benchmarks.fleet``); then the service's evaluator runs for each host:
every check (a full evaluation), and only the checks a typical delta touches (the processes
table, which changes in nearly every report). The shipped packs hold more than the 100 Linux
checks GOALS.md sizes its target for, so they are measured as shipped.

Costs are the evaluating thread's CPU time (``time.thread_time``), not wall time: the
machines are shared, and another process's burst would otherwise count as ours.

This machine runs no SSH server, so on its facts the 12 SSH checks stop at their ``applies``
query (not applicable). A second kind of host adds what a server with OpenSSH reports: the
``openssh-server`` package and a real Debian 12 ``sshd_config`` with a hardening drop-in,
taken from the SSH checks' own pass fixtures, so those checks parse real configuration.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.collect import TableResult
from benchmarks.common import POLICIES, Measure, measure, median
from benchmarks.fleet import FleetBase, SimulatedHost, machine_facts
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.evaluate import Evaluator
from collector.policy.loader import load_packs
from collector.policy.model import Check
from collector.service import PostureService
from collector.store import SqliteStore

__all__ = ["evaluation_measures", "seed_hosts", "with_sshd"]

TYPICAL_DELTA = frozenset({"processes"})
#: Where the SSH server's facts come from (module docstring): a check's pass fixtures.
_SSHD_FIXTURES = (
    POLICIES / "city-baseline/fixtures/city.linux.ssh-root-login-disabled.pass.json",
    POLICIES / "cis-linux-l1/fixtures/cis.linux.sshd-config-permissions.pass.json",
)
#: Simulated hosts with an SSH server are numbered from here, apart from the others.
_SSHD_FIRST = 1_000_000


def seed_hosts(service: PostureService, base: FleetBase, count: int, first: int = 0) -> list[Host]:
    """Enroll ``count`` hosts (numbered from ``first``) and store each one's full first
    report (evaluated too)."""
    _, secret = service.create_enroll_secret(f"bench-{first}")
    hosts = []
    for index in range(first, first + count):
        simulated = SimulatedHost.derived(index, base)
        host = service.enroll(secret, HostIdentity(**simulated.identity())).host
        tables = [TableFacts(n, t.rows, t.error) for n, t in simulated.tables().items()]
        service.ingest(host, FactBatch(1, datetime.now(UTC), tables, simulated.digests()))
        hosts.append(host)
    return hosts


def with_sshd(tables: Mapping[str, TableResult]) -> dict[str, TableResult]:
    """``tables`` plus an SSH server's facts (module docstring): its package first among
    the packages (every simulated host keeps its first thousand), its configuration's
    lines and file entries."""
    extra: dict[str, list[dict[str, str]]] = {"deb_packages": [], "file_lines": [], "file": []}
    for fixture in _SSHD_FIXTURES:
        facts = json.loads(fixture.read_text())["tables"]
        for name, rows in extra.items():
            for row in facts.get(name, ()):
                wanted = row.get("name") == "openssh-server" or "/etc/ssh/" in row.get("path", "")
                if wanted and row not in rows:
                    rows.append(row)
    merged = dict(tables)
    for name, rows in extra.items():
        own = tables.get(name, TableResult())
        kept = [r for r in own.rows if r.get("name") != "openssh-server"]
        merged[name] = TableResult(
            [*rows, *kept] if name == "deb_packages" else [*kept, *rows], own.error
        )
    return merged


def _per_host_ms(
    evaluator: Evaluator, store: SqliteStore, hosts: Sequence[Host], only: frozenset[str] | None
) -> list[float]:
    """CPU milliseconds of the evaluating thread, per host."""
    timings = []
    for host in hosts:
        status = {name: (s.error or None) for name, s in store.table_states(host.id).items()}
        started = time.thread_time()
        evaluator.evaluate(host.id, host.identity.platform, status, only)
        timings.append(1000 * (time.thread_time() - started))
    return timings


def _evaluate_at(count: int, base: FleetBase, repeats: int) -> list[float]:
    """Full evaluation ms per host with ``count`` hosts in the store."""
    with tempfile.TemporaryDirectory(prefix="posture-eval-") as scratch:
        store = SqliteStore(Path(scratch) / "collector.db")
        service = PostureService(store, load_packs(POLICIES))
        sample = random.Random(0).sample(seed_hosts(service, base, count), min(count, 200))
        _settle(service.evaluator, store, sample)
        timings = [
            ms
            for _ in range(repeats)
            for ms in _per_host_ms(service.evaluator, store, sample, None)
        ]
        service.close()
        store.close()
    return timings


def _settle(evaluator: Evaluator, store: SqliteStore, hosts: Sequence[Host]) -> None:
    """Measure the steady state, not the seeding's aftermath: checkpoint the WAL and
    evaluate each host once untimed. Right after seeding, a gigabyte of freshly written
    pages is still being flushed, and the first pass over the hosts cost 1.5x the next
    (2.3 against 1.6 ms at 1,000 hosts); a collector evaluates a host right after storing
    its report, its pages at hand."""
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _per_host_ms(evaluator, store, hosts, None)


def _interleaved(
    evaluator: Evaluator, store: SqliteStore, groups: Sequence[Sequence[Host]], repeats: int
) -> list[list[float]]:
    """Full-evaluation timings for each group of hosts, the groups taking turns (so a
    burst of load on the shared machine falls on all of them alike)."""
    timings: list[list[float]] = [[] for _ in groups]
    for _ in range(repeats):
        for timing, hosts in zip(timings, groups, strict=True):
            timing += _per_host_ms(evaluator, store, hosts, None)
    return timings


def evaluation_measures(host_counts: Sequence[int], repeats: int) -> list[Measure]:
    machine = machine_facts()
    base, sshd_base = FleetBase.from_tables(machine), FleetBase.from_tables(with_sshd(machine))
    packs = load_packs(POLICIES)
    linux = [c for pack in packs for c in pack.checks if "linux" in c.platforms]
    largest = max(host_counts)
    with tempfile.TemporaryDirectory(prefix="posture-eval-") as scratch:
        store = SqliteStore(Path(scratch) / "collector.db")
        service = PostureService(store, packs)
        hosts = seed_hosts(service, base, largest)
        sample = random.Random(0).sample(hosts, min(len(hosts), 200))
        servers = seed_hosts(service, sshd_base, min(largest, 20), _SSHD_FIRST)
        _settle(service.evaluator, store, [*sample, *servers])
        full, sshd = _interleaved(service.evaluator, store, (sample, servers), repeats)
        delta = [
            ms
            for _ in range(repeats)
            for ms in _per_host_ms(service.evaluator, store, sample, TYPICAL_DELTA)
        ]
        slowest = _slowest_checks(store, linux, servers[:10])
        service.close()
        store.close()
    measures = [
        measure(f"full evaluation, shipped packs ({len(linux)} Linux checks), {largest} hosts",
                full, "ms CPU/host", 2.0),
        measure("per check (full evaluation / checks)", [m / len(linux) for m in full], "ms"),
        measure("full evaluation, a host with an SSH server (sshd_config parsed)", sshd,
                "ms CPU/host", 2.0),
        measure("incremental re-evaluation after a processes delta", delta, "ms CPU/host", 0.5),
    ]  # fmt: skip
    measures += [
        measure(f"slowest check (SSH server host): {check_id}", ms, "ms CPU")
        for check_id, ms in slowest
    ]
    for count in sorted(set(host_counts) - {largest}):
        timings = _evaluate_at(count, base, repeats)
        measures.append(
            measure(f"full evaluation, {count} hosts in the store", timings, "ms CPU/host")
        )
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
