"""Posture's benchmarks: ``.venv/bin/python -m benchmarks [--quick] [--only SECTION ...]``.

Prints one Markdown table per section, each line a median over several runs beside the
GOALS.md target it answers to. ``--quick`` shrinks every size so the whole run takes about
two minutes (a smoke run, not figures to quote); the default sizes are the ones
docs/performance.md reports, and take about half an hour on two cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from benchmarks.agent_footprint import footprint_measures
from benchmarks.common import Measure, measure, print_table
from benchmarks.evaluation import evaluation_measures
from benchmarks.growth import growth_measures
from benchmarks.ingest import ingest_measures
from benchmarks.loadgen import LoadResult, run_load
from benchmarks.openscap import openscap_measures
from benchmarks.report_cost import report_measures

__all__ = ["main"]


@dataclass(frozen=True)
class Sizes:
    runs: int
    daemon_seconds: float
    evaluation_hosts: tuple[int, ...]
    report_hosts: tuple[int, ...]
    load_agents: int
    load_cadences: tuple[float, ...]
    load_seconds: float
    load_processes: int
    idle_streams: int
    ingest_hosts: int = 200
    growth_hosts: int = 100
    growth_hours: float = 24


QUICK = Sizes(
    runs=2,
    daemon_seconds=8,
    evaluation_hosts=(20,),
    report_hosts=(300,),
    load_agents=60,
    load_cadences=(1.0,),
    load_seconds=8,
    load_processes=1,
    idle_streams=100,
    ingest_hosts=20,
    growth_hosts=10,
    growth_hours=1,
)
FULL = Sizes(
    runs=5,
    daemon_seconds=60,
    evaluation_hosts=(100, 1_000),
    report_hosts=(50_000,),
    load_agents=1_000,
    load_cadences=(40.0, 20.0, 10.0, 6.0),
    load_seconds=40,
    load_processes=1,
    idle_streams=2_000,
)
SECTIONS = ("agent", "openscap", "evaluation", "ingest", "growth", "report", "load")


def _load_measures(sizes: Sizes) -> list[Measure]:
    results = run_load(
        sizes.load_agents,
        sizes.load_cadences,
        sizes.load_seconds,
        processes=sizes.load_processes,
    )
    first = results[0]
    measures = [
        measure("first (full) report: ingest", [first.first_reports_per_second], "reports/s"),
        measure("first (full) report: hello -> ack p50", [1000 * first.first_report_p50], "ms"),
        measure("first (full) report on the wire", [first.first_report_bytes / 1024], "KB"),
    ]
    measures += [m for result in results for m in _load_rows(result)]
    return measures + _idle_stream_rows(sizes.idle_streams)


def _idle_stream_rows(agents: int) -> list[Measure]:
    """What holding one stream open per agent would cost the collector (GOALS.md: ~85 KB)."""
    (idle,) = run_load(agents, (3600.0,), 15, persistent=True, first_report=False)
    per_stream = 1024 * (idle.collector_rss_mb - idle.rss_before_mb) / agents
    return [
        measure(
            f"collector RSS, {agents:,} enrolled agents, no stream open", [idle.rss_before_mb], "MB"
        ),
        measure(
            f"collector RSS, the same with {agents:,} idle streams open",
            [idle.collector_rss_mb],
            "MB",
        ),
        measure("collector memory per idle open stream", [per_stream], "KB"),
        measure("the same extrapolated to 50,000 agents", [50_000 * per_stream / 1024], "MB", 2048),
    ]


def _load_rows(r: LoadResult) -> list[Measure]:
    at = f"{r.offered_per_second:.0f}/s offered (= {r.equivalent_agents:,.0f} agents at 5 min)"
    return [
        measure(f"{at}: ingest", [r.reports_per_second], "reports/s"),
        measure(f"{at}: ack p50", [1000 * r.ack_p50], "ms"),
        measure(f"{at}: ack p99", [1000 * r.ack_p99], "ms", 250),
        measure(f"{at}: report -> score p99", [1000 * r.score_p99], "ms", 1000),
        measure(f"{at}: collector CPU", [r.collector_cpu_percent], "% of a core"),
        measure(f"{at}: collector peak RSS", [r.collector_rss_mb], "MB", 2048),
        measure(f"{at}: load generator CPU", [r.loadgen_cpu_percent], "% of a core"),
        measure(f"{at}: database growth per host per day", [r.growth_per_host_day_mb], "MB"),
        measure(f"{at}: database size per host", [r.db_bytes_per_host / 1024], "KB"),
        measure(f"{at}: delta report on the wire", [r.delta_report_bytes / 1024], "KB"),
    ]


def _section(name: str, sizes: Sizes) -> tuple[str, list[Measure] | str]:
    runs: dict[str, Callable[[], tuple[str, list[Measure] | str]]] = {
        "agent": lambda: (
            "Agent footprint (this machine's real facts, shipped packs' plan)",
            footprint_measures(sizes.runs, sizes.daemon_seconds),
        ),
        "openscap": lambda: (
            "Side by side with OpenSCAP (same machine, same run)",
            openscap_measures(max(1, sizes.runs - 2)),
        ),
        "evaluation": lambda: (
            "Evaluation cost (real store, hosts derived from this machine)",
            evaluation_measures(sizes.evaluation_hosts, max(1, sizes.runs - 2)),
        ),
        "ingest": lambda: (
            f"Ingest in-process (writer thread per delta, {sizes.ingest_hosts} hosts stored)",
            ingest_measures(sizes.ingest_hosts, sizes.runs),
        ),
        "growth": lambda: (
            f"Database growth ({sizes.growth_hosts} hosts, {sizes.growth_hours:g} simulated"
            " hours of reports through the writer)",
            growth_measures(sizes.growth_hosts, sizes.growth_hours),
        ),
        "report": lambda: (
            "Fleet report cost (posture-collector report, fresh process per run)",
            report_measures(sizes.report_hosts, max(1, sizes.runs - 2)),
        ),
        "load": lambda: (
            f"Collector under load ({sizes.load_agents:,} simulated agents over TLS,"
            f" {sizes.load_seconds:g}s per phase)",
            _load_measures(sizes),
        ),
    }
    return runs[name]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run this section")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    memory = psutil.virtual_memory().total / 2**30
    print(
        f"# Posture benchmarks ({'quick' if args.quick else 'full'}):"
        f" {psutil.cpu_count()} CPUs, {memory:.0f} GB, {platform.platform()},"
        f" Python {platform.python_version()}"
    )
    for name in args.only or SECTIONS:
        started = time.perf_counter()
        title, outcome = _section(name, sizes)
        if isinstance(outcome, str):
            print(f"\n### {title}\n\n{outcome}")
        else:
            print_table(f"{title} [{time.perf_counter() - started:.0f}s]", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
