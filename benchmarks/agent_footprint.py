"""The agent's footprint on a laptop: one collection, the daemon, and the bytes it sends.

- One full collection for the shipped packs' plan, in a fresh process: CPU seconds and peak
  RSS of the whole process (interpreter and imports included, as a laptop pays them), and
  the CPU of the collection alone.
- Bytes on the wire, from the agent's own spool and encoder: the first (full) report, a
  report where nothing changed, and a typical delta (a second real collection). The agent
  gzip-compresses its stream (``agent.transport.AgentStream``), so the wire size is the
  gzip size of the encoded message (gRPC adds a 5-byte frame header and HTTP/2 framing).
- The daemon (``posture-agent run``) against a real collector with a short interval: its
  steady RSS and CPU per collection cycle, extrapolated to an hour at the 5-minute cadence.
- The command line in a fresh process, as a laptop without the daemon runs it:
  ``posture-agent facts`` (collect and print, no network) and ``posture-agent once``
  (collect, connect with TLS, send, wait for the ack), whose gRPC, protobuf and asyncio
  imports the collection alone does not pay.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import psutil

from agent.collect import Collection, collect
from agent.plan import CollectionPlan
from agent.sources import default_sources
from agent.spool import Spool
from agent.transport import batch_to_proto
from benchmarks.common import ROOT, CollectorProcess, Measure, Usage, measure, run_measured
from benchmarks.fleet import machine_plan

__all__ = ["collection_usage", "daemon_footprint", "footprint_measures", "wire_sizes"]

DEFAULT_CADENCE = 300


def write_plan(plan: CollectionPlan, path: Path) -> Path:
    path.write_text(json.dumps(plan.to_dict()))
    return path


def collection_usage(plan_path: Path) -> tuple[Usage, float]:
    """(the fresh process's usage, CPU seconds of the collection alone)."""
    usage = run_measured([sys.executable, "-m", "benchmarks.probe", "collect", str(plan_path)],
                         cwd=ROOT)  # fmt: skip
    if usage.returncode != 0:
        raise RuntimeError(f"collection probe failed ({usage.returncode})")
    return usage, float(json.loads(usage.stdout)["work_cpu"])


def _report_bytes(spool: Spool, collection: Collection, version: str) -> tuple[int, int]:
    """(protobuf bytes, gzip bytes) of the batch the spool makes of ``collection``."""
    seq, _ = spool.spool(collection, int(time.time() * 1000), version)
    batch = next(b for b in spool.pending(seq - 1) if b.seq == seq)
    encoded = batch_to_proto(batch).SerializeToString()
    spool.acknowledge(seq)
    return len(encoded), len(gzip.compress(encoded))


def wire_sizes(plan: CollectionPlan) -> dict[str, tuple[int, int]]:
    """First, no-change and typical-delta report sizes: name -> (bytes, gzip bytes)."""
    sources = default_sources(None)
    with tempfile.TemporaryDirectory() as scratch:
        spool = Spool(Path(scratch) / "agent.db")
        first = collect(plan, sources)
        sizes = {"first (full) report": _report_bytes(spool, first, plan.version)}
        sizes["no-change report"] = _report_bytes(spool, first, plan.version)
        sizes["typical delta (next collection)"] = _report_bytes(
            spool, collect(plan, sources), plan.version
        )
        spool.close()
    return sizes


def _stored_batches(db: Path) -> int:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])


def cli_usage(plan_path: Path, state_dir: Path, runs: int) -> tuple[list[Usage], list[Usage]]:
    """Fresh-process usage of ``posture-agent facts`` and of ``posture-agent once`` (after
    a first ``once`` that sends the full report, so each measured one sends a delta)."""
    agent = [sys.executable, "-m", "agent"]
    facts = [run_measured([*agent, "facts", "--plan", str(plan_path)], cwd=ROOT)
             for _ in range(runs)]  # fmt: skip
    once = [*agent, "once", "--state-dir", str(state_dir)]
    measured = [run_measured(once, cwd=ROOT) for _ in range(runs + 1)][1:]
    if any(usage.returncode != 0 for usage in [*facts, *measured]):
        raise RuntimeError("posture-agent facts or once failed")
    return facts, measured


def daemon_footprint(
    seconds: float, workdir: Path, plan_path: Path | None = None, runs: int = 0
) -> tuple[list[float], float, int, tuple[list[Usage], list[Usage]]]:
    """Run ``posture-agent run`` against a collector with a 2 s interval for ``seconds``;
    before it, ``runs`` fresh ``facts`` (for ``plan_path``) and ``once`` commands.

    Returns (RSS samples in MB after the first collection, CPU seconds per collection cycle,
    cycles measured, the command line's usage from ``cli_usage``).
    """
    with CollectorProcess(workdir / "collector", interval=2) as collector:
        assert collector.pki is not None
        env = {**os.environ, "POSTURE_AGENT_STATE_DIR": str(workdir / "agent")}
        agent = [sys.executable, "-m", "agent"]
        subprocess.run(
            [*agent, "enroll", "--collector", collector.address, "--ca-cert",
             str(collector.pki.ca_cert), "--secret", collector.enroll_secret()],
            env=env, check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip
        cli = cli_usage(plan_path, workdir / "agent", runs) if plan_path and runs else ([], [])
        before = _stored_batches(collector.db)
        log = (workdir / "agent.log").open("wb")
        daemon = subprocess.Popen([*agent, "run"], env=env, stdout=log, stderr=log, cwd=ROOT)
        try:
            watched = _watch_daemon(psutil.Process(daemon.pid), collector.db, seconds, before)
            return (*watched, cli)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            log.close()


def _watch_daemon(
    process: psutil.Process, db: Path, seconds: float, before: int = 0
) -> tuple[list[float], float, int]:
    deadline = time.monotonic() + 60
    while _stored_batches(db) < before + 2:  # past start-up and its first report
        if time.monotonic() > deadline:
            raise RuntimeError("the agent daemon did not report")
        time.sleep(0.2)
    start_cpu, start_batches = sum(process.cpu_times()[:2]), _stored_batches(db)
    rss = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss.append(process.memory_info().rss / 2**20)
        time.sleep(0.5)
    cycles = _stored_batches(db) - start_batches
    cpu = sum(process.cpu_times()[:2]) - start_cpu
    return rss, cpu / max(1, cycles), cycles


def footprint_measures(runs: int, daemon_seconds: float) -> list[Measure]:
    plan = machine_plan()
    with tempfile.TemporaryDirectory(prefix="posture-agent-bench-") as scratch:
        workdir = Path(scratch)
        plan_path = write_plan(plan, workdir / "plan.json")
        usages = [collection_usage(plan_path) for _ in range(runs)]
        rss, cpu_per_cycle, cycles, (facts, once) = daemon_footprint(
            daemon_seconds, workdir, plan_path, runs
        )
    sizes = wire_sizes(plan)
    per_hour = [cpu_per_cycle * 3600 / DEFAULT_CADENCE]
    measures = [
        measure("one collection, whole fresh process: CPU", [u.cpu_seconds for u, _ in usages],
                "s", 0.25),
        measure("one collection, whole fresh process: peak RSS",
                [u.peak_rss_mb for u, _ in usages], "MB", 50),
        measure("one collection alone (no start-up): CPU", [w for _, w in usages], "s"),
        measure("daemon steady RSS (max of samples)", [max(rss)], "MB", 50),
        measure("daemon steady RSS (median of samples)", [statistics.median(rss)], "MB"),
        measure(f"daemon CPU per collection cycle ({cycles} cycles)", [cpu_per_cycle], "s"),
        measure("daemon CPU per hour at the 5-minute cadence", per_hour, "s"),
        measure("daemon CPU share of one core at the 5-minute cadence",
                [100 * p / 3600 for p in per_hour], "%", 0.1),
        measure("`posture-agent facts`, fresh process: CPU", [u.cpu_seconds for u in facts], "s"),
        measure("`posture-agent once` (collect, TLS, send, ack), fresh process: CPU",
                [u.cpu_seconds for u in once], "s"),
        measure("`posture-agent once`, fresh process: peak RSS",
                [u.peak_rss_mb for u in once], "MB"),
    ]  # fmt: skip
    targets = {"first (full) report": 150.0, "no-change report": 2.0}
    for name, (raw, zipped) in sizes.items():
        target = targets.get(name)
        measures.append(measure(f"{name} on the wire (gzip)", [zipped / 1024], "KB", target))
        measures.append(measure(f"{name}, protobuf before compression", [raw / 1024], "KB"))
    return measures
