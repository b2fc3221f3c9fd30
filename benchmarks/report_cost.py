"""Report cost: the fleet report for many hosts, produced the way an auditor asks for it.

Hosts and their latest results are stored through the real store (``PostureService.enroll``,
``SqliteStore.apply_batch`` and ``save_results``), with results taken from a real evaluation
of this machine and varied per host. Then ``posture-collector report --format F --output
FILE`` runs in a fresh process per format, measured by ``wait4`` (wall time, CPU, peak RSS).
Seeding turns off ``synchronous`` on the seeding connection only: the rows are the same, and
50,000 fsyncs would measure the disk, not the report.
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import POLICIES, ROOT, Measure, Usage, measure, run_measured
from benchmarks.evaluation import seed_hosts
from benchmarks.fleet import FleetBase, identity_of, machine_facts
from collector.model import FactBatch, HostIdentity, StoredResult
from collector.policy.loader import load_packs
from collector.policy.model import Status
from collector.service import PostureService
from collector.store import SqliteStore

__all__ = ["report_measures"]

#: PDF has its own target (one group of 500 hosts); the fleet target covers the others.
#: A format this checkout's CLI does not offer yet is skipped.
FLEET_FORMATS = ("table", "json", "csv", "html")
_USAGE_ERROR = 2


def _seed(db: Path, count: int) -> None:
    store = SqliteStore(db)
    service = PostureService(store, load_packs(POLICIES))
    template = seed_hosts(service, FleetBase.from_tables(machine_facts()), 1)[0]
    results = store.results_for(template.id)
    store.conn.execute("PRAGMA synchronous=OFF")
    _, secret = service.create_enroll_secret("report-bench")
    rng = random.Random(0)
    now = datetime.now(UTC)
    for index in range(1, count):
        identity = HostIdentity(**identity_of(index))
        host = service.enroll(secret, identity).host
        store.apply_batch(host.id, FactBatch(1, now, [], {}), now)
        store.save_results(host.id, [_varied(r, host.id, rng, now) for r in results], now)
    service.close()
    store.close()


def _varied(result: StoredResult, host_id: int, rng: random.Random, now: datetime) -> StoredResult:
    """The template host's result, failing on some hosts where it passed (and back)."""
    status = result.status
    if status in (Status.PASS, Status.FAIL) and rng.random() < 0.2:
        status = Status.FAIL if status is Status.PASS else Status.PASS
    return StoredResult(host_id, result.check_id, status, result.reason, result.evidence, now, now)


def report_measures(host_counts: Sequence[int], runs: int) -> list[Measure]:
    measures = []
    with tempfile.TemporaryDirectory(prefix="posture-report-") as scratch:
        for count in host_counts:
            db = Path(scratch) / f"report-{count}.db"
            _seed(db, count)
            for fmt in FLEET_FORMATS:
                output = Path(scratch) / f"report.{fmt}"
                repeats = 1 if count >= 5_000 else runs  # a minute or more per run from there
                usages = [u for u in (_report(db, fmt, output) for _ in range(repeats)) if u]
                if not usages:
                    continue
                target = 30.0 if count >= 50_000 else None
                name = f"fleet report, {count:,} hosts, {fmt}"
                measures.append(
                    measure(f"{name}: time", [u.wall_seconds for u in usages], "s", target)
                )
                measures.append(measure(f"{name}: peak RSS", [u.peak_rss_mb for u in usages], "MB"))
    return measures


def _report(db: Path, fmt: str, output: Path) -> Usage | None:
    """The report's cost, or None when the CLI does not offer ``fmt``."""
    usage = run_measured(
        [
            sys.executable,
            "-m",
            "collector",
            "report",
            "--db",
            str(db),
            "--policies",
            str(POLICIES),
            "--format",
            fmt,
            "--output",
            str(output),
        ],
        cwd=ROOT,
    )
    if usage.returncode == _USAGE_ERROR:
        return None
    if usage.returncode != 0:
        raise RuntimeError(f"report --format {fmt} failed with exit code {usage.returncode}")
    return usage
