"""The documented benchmark commands run, as real processes, on tiny sizes.

No timing is asserted (benchmarks measure, tests do not); what is checked is that each
command does real work and prints the figures it promises. ``benchmarks`` is run from the
repository root, as the docs say, rather than imported (it is not an installed package).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_entry_point_prints_a_table_of_medians() -> None:
    out = _run("benchmarks", "--quick", "--only", "evaluation")
    assert "| measure | median | unit | runs | target | verdict |" in out
    full = re.search(
        r"\| full evaluation, shipped packs \((\d+) Linux checks\).*?\| ([\d.]+) \|", out
    )
    assert full, out
    assert int(full.group(1)) > 0 and float(full.group(2)) > 0
    assert "| incremental re-evaluation after a processes delta |" in out


def test_the_load_generator_measures_a_tiny_fleet() -> None:
    out = _run("benchmarks.loadgen", "--agents", "6", "--cadence", "0.5", "--duration", "3")
    assert "6 agents every 0.5s" in out
    ingest = re.search(r"ingest (\d+) reports/s; ack p50 ([\d.]+) ms", out)
    assert ingest, out
    assert int(ingest.group(1)) > 0 and float(ingest.group(2)) > 0
    assert "errors none" in out
    first = re.search(r"(\d+) KB each", out)
    assert first and int(first.group(1)) > 0, out


def test_the_flood_measurement_floods_and_compares_the_others_p99() -> None:
    out = _run("benchmarks.flood", "--agents", "1", "--interval", "2", "--window", "6")
    assert "p99 ratio (target < 2):" in out, out
    rates = re.search(r"flooder: sent ([\d.]+)/s, acknowledged ([\d.]+)/s", out)
    assert rates, out
    assert float(rates.group(1)) > 0 and float(rates.group(2)) > 0
