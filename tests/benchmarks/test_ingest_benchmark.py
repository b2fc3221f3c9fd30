"""The in-process ingest benchmark runs as documented, on tiny sizes, as a real process.

No timing is asserted (benchmarks measure, tests do not): what is checked is that it
stores deltas one at a time and grouped, and prints the figures it promises.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_ingest_benchmark_prints_ms_per_delta_one_by_one_and_grouped() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest", "--hosts", "6", "--rounds", "2",
         "--group", "1", "--group", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for label in ("one delta per commit", "3 deltas per commit"):
        row = re.search(rf"\| {label}: writer ms per delta \(mean of a round\) \| ([\d.]+) \|", out)
        assert row and float(row.group(1)) > 0, out
    rows = re.search(r"\| rows in a delta's changed tables \| ([\d.]+) \|", out)
    assert rows and float(rows.group(1)) > 0, out


def test_the_growth_benchmark_prints_growth_per_host_per_day_and_its_tables() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.growth", "--hosts", "4", "--hours", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    growth = re.search(
        r"\| growth per host per day \(6 reports per host, every 5 min\) \| ([\d.]+)", out
    )
    assert growth and float(growth.group(1)) > 0, out
    stored = re.search(r"\| first reports: stored per host \(4 hosts\) \| ([\d.]+) \|", out)
    assert stored and float(stored.group(1)) > 0.1, out  # a host's facts, not an empty file
    assert "| of which batches |" in out, out  # every report is recorded once


def test_the_growth_benchmark_refuses_an_empty_day() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.growth", "--hours", "0.01"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "at least one host and one report interval" in done.stderr
