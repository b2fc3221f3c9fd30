"""Side by side with OpenSCAP, the scanner a city would otherwise run, on the same machine.

OpenSCAP scans with SCAP Security Guide's ``standard`` profile, results only (no HTML
report), as GOALS.md measured it. Posture does the same job in two processes: the agent's
collection and the collector's storing and evaluation of one host. Each is measured in a
fresh process (``benchmarks.probe``), and the ratios Posture/OpenSCAP come from the same run.

Nothing is installed here. Without ``oscap`` and the content, the rows are skipped with
``INSTALL_HINT``. Debian ships content up to Debian 11; on Debian 12 a copy whose OS-version
pattern is widened to 11-12 is scanned (GOALS.md; ``oscap ds sds-validate`` still passes).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.collect import collect, table_digest
from agent.sources import default_sources
from benchmarks.agent_footprint import collection_usage, write_plan
from benchmarks.common import POLICIES, ROOT, Measure, Usage, measure, median, run_measured
from benchmarks.fleet import machine_plan

__all__ = ["INSTALL_HINT", "openscap_measures"]

INSTALL_HINT = (
    "OpenSCAP rows skipped: install the scanner and content with"
    " `apt-get install -y openscap-scanner ssg-debian ssg-debderived`"
)
PROFILE = "xccdf_org.ssgproject.content_profile_standard"
_CONTENT = Path("/usr/share/xml/scap/ssg/content")
_OS_PATTERN = "^11.[0-9]+$"
_WIDENED = r"^1[12]\.[0-9]+$"


@dataclass(frozen=True)
class Scan:
    usage: Usage
    rules: int


def content(workdir: Path) -> Path | None:
    """The Debian data stream to scan (widened for Debian 12), or None when absent."""
    if shutil.which("oscap") is None:
        return None
    source = _CONTENT / "ssg-debian11-ds.xml"
    if not source.exists():
        return None
    copy = workdir / "ssg-debian11-12-ds.xml"
    copy.write_text(source.read_text().replace(_OS_PATTERN, _WIDENED))
    return copy


def scan(data_stream: Path, workdir: Path) -> Scan:
    results = workdir / "results.xml"
    results.unlink(missing_ok=True)
    usage = run_measured(
        ["oscap", "xccdf", "eval", "--profile", PROFILE, "--results", str(results),
         str(data_stream)],
        cwd=workdir,
    )  # fmt: skip
    # oscap exits 2 when a rule fails, which is a normal scan outcome.
    if usage.returncode not in (0, 2) or not results.exists():
        raise RuntimeError(f"oscap failed with exit code {usage.returncode}")
    outcomes = re.findall(r"<result>(\w+)</result>", results.read_text())
    return Scan(usage, sum(1 for outcome in outcomes if outcome != "notselected"))


def _posture_evaluation(workdir: Path) -> Usage:
    """Store and evaluate this machine's facts in a fresh collector-side process."""
    plan = machine_plan()
    tables = collect(plan, default_sources(None)).tables
    facts = {
        "policies": str(POLICIES),
        "tables": {n: {"rows": t.rows, "error": t.error} for n, t in tables.items()},
        "digests": {n: table_digest(t) for n, t in tables.items()},
    }
    path = workdir / "facts.json"
    path.write_text(json.dumps(facts))
    db = workdir / "evaluate.db"
    for stale in workdir.glob("evaluate.db*"):
        stale.unlink()
    usage = run_measured(
        [sys.executable, "-m", "benchmarks.probe", "evaluate", str(path), str(db)], cwd=ROOT
    )
    if usage.returncode != 0:
        raise RuntimeError("evaluation probe failed")
    return usage


def openscap_measures(runs: int) -> list[Measure] | str:
    """The side-by-side rows, or why they were skipped."""
    with tempfile.TemporaryDirectory(prefix="posture-oscap-") as scratch:
        workdir = Path(scratch)
        data_stream = content(workdir)
        if data_stream is None:
            return INSTALL_HINT
        plan_path = write_plan(machine_plan(), workdir / "plan.json")
        scans, agents, collectors = [], [], []
        for _ in range(runs):
            scans.append(scan(data_stream, workdir))
            agents.append(collection_usage(plan_path)[0])
            collectors.append(_posture_evaluation(workdir))
    return _rows(scans, agents, collectors)


def _rows(scans: list[Scan], agents: list[Usage], collectors: list[Usage]) -> list[Measure]:
    oscap_cpu = [s.usage.cpu_seconds for s in scans]
    oscap_rss = [s.usage.peak_rss_mb for s in scans]
    agent_cpu = [u.cpu_seconds for u in agents]
    both_cpu = [a.cpu_seconds + c.cpu_seconds for a, c in zip(agents, collectors, strict=True)]
    agent_rss = [u.peak_rss_mb for u in agents]
    return [
        measure(f"OpenSCAP standard profile ({median([s.rules for s in scans]):.0f} rules"
                " selected): CPU", oscap_cpu, "s"),
        measure("OpenSCAP standard profile: peak RSS", oscap_rss, "MB"),
        measure("Posture agent collection: CPU", agent_cpu, "s"),
        measure("Posture agent collection: peak RSS", agent_rss, "MB"),
        measure("Posture collector store + evaluate one host: CPU",
                [u.cpu_seconds for u in collectors], "s"),
        measure("Posture collector store + evaluate one host: peak RSS",
                [u.peak_rss_mb for u in collectors], "MB"),
        measure("CPU ratio agent / OpenSCAP", _ratios(agent_cpu, oscap_cpu), "x", 0.2,
                "<= 0.2 (5x less)"),
        measure("CPU ratio agent + collector / OpenSCAP", _ratios(both_cpu, oscap_cpu), "x"),
        measure("peak memory ratio agent / OpenSCAP", _ratios(agent_rss, oscap_rss), "x", 0.25,
                "<= 0.25 (4x less)"),
    ]  # fmt: skip


def _ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """Run-by-run ratios: each pair ran back to back, under the same machine load."""
    return [a / b for a, b in zip(ours, theirs, strict=True)]
