"""Database growth: a day of a fleet's reports, in compressed time.

    .venv/bin/python -m benchmarks.growth --hosts 100 --hours 24
    .venv/bin/python -m benchmarks --only growth

GOALS.md asks for the database growth per host per day at typical change rates. The load
generator's phases last a minute, too short to tell growth from SQLite reusing freed pages,
so this runs a whole day through the collector's writer path instead: the hosts' first
reports, then one delta per host every 5 minutes of simulated time (288 a day), each made
as the load generator makes it (``benchmarks.fleet``'s change rates) and stored, drift-
tracked and evaluated exactly as ``serve``'s writer thread does it (``benchmarks.ingest``),
eight deltas per commit. No clock is faked: a simulated day takes a few minutes, and
nothing in the store ages within one (history retention works in days).

Sizes are what a checkpointed database holds: the file's pages less the free ones, per
table and index from SQLite's ``dbstat``, so space SQLite will reuse does not count as
growth. The table gives the growth per host per day, the size per host after the first
reports, and the tables that grow most.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.common import Measure, measure, print_table
from benchmarks.fleet import FleetBase, machine_facts
from benchmarks.ingest import enroll_agents, ingest_round, writer_service

__all__ = ["growth_measures", "main"]

MINUTES_PER_REPORT = 5
#: Deltas per commit, as a busy writer takes them (``benchmarks.ingest.GROUPS``).
GROUP = 8
#: Tables (and their indexes) listed on their own in the table, largest growth first.
LISTED = 5
MB = 1e6


def live_bytes(conn: sqlite3.Connection) -> Counter[str]:
    """Bytes of used pages per table (an index counts under its own name), after a
    checkpoint so the WAL's pages are in the file."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = conn.execute("SELECT name, sum(pgsize - unused) FROM dbstat GROUP BY name")
    return Counter({name: int(size) for name, size in rows})


def _day(hosts: int, hours: float) -> tuple[Counter[str], Counter[str], int]:
    """Sizes after the first reports and after ``hours`` of reports, and the reports."""
    reports = int(hours * 60 / MINUTES_PER_REPORT)
    base = FleetBase.from_tables(machine_facts())
    with (
        tempfile.TemporaryDirectory(prefix="posture-growth-") as scratch,
        writer_service(Path(scratch), "FULL") as service,
    ):
        agents, _ = enroll_agents(service, base, hosts)
        conn = service.store.conn
        before = live_bytes(conn)
        for done in range(reports):
            ingest_round(service, agents, GROUP)
            if (done + 1) % (60 // MINUTES_PER_REPORT) == 0:
                hour = (done + 1) * MINUTES_PER_REPORT / 60
                print(f"simulated hour {hour:g} of {hours:g}", file=sys.stderr, flush=True)
        after = live_bytes(conn)
    return before, after, reports


def growth_measures(hosts: int, hours: float = 24) -> list[Measure]:
    before, after, reports = _day(hosts, hours)
    per_day = 24 / hours
    grown = Counter({name: after[name] - before[name] for name in after})
    total = sum(grown.values()) * per_day / hosts / MB
    measures = [
        measure(f"first reports: stored per host ({hosts} hosts)",
                [sum(before.values()) / hosts / MB], "MB"),
        measure(f"growth per host per day ({reports} reports per host, every"
                f" {MINUTES_PER_REPORT} min)", [total], "MB/host/day"),
        measure("growth per report", [sum(grown.values()) / hosts / reports], "bytes"),
    ]  # fmt: skip
    for name, size in grown.most_common(LISTED):
        measures.append(measure(f"of which {name}", [size * per_day / hosts / MB], "MB/host/day"))
    return measures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.growth", description=__doc__)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--hours", type=float, default=24, help="simulated hours of reports")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.hours * 60 < MINUTES_PER_REPORT:
        parser.error("need at least one host and one report interval")
    print_table(
        f"Database growth ({args.hosts} hosts, {args.hours:g} simulated hours)",
        growth_measures(args.hosts, args.hours),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
