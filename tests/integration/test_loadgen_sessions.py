"""The load generator's simulated agents resume TLS sessions as daemons do, and the handshake
benchmark measures each kind of connection: real processes, tiny sizes, no timing asserted.

Whether a stream resumed is the collector's own count (``posture_stream_tls_sessions``),
which the load generator scrapes from a real ``posture-collector serve``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
TINY = ("--agents", "4", "--cadence", "0.5", "--duration", "3")


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _streams(out: str) -> tuple[int, int]:
    found = re.search(r"(\d+) of (\d+) streams resumed TLS sessions", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def test_every_simulated_agent_resumes_its_own_session() -> None:
    out = _run("benchmarks.loadgen", *TINY)
    assert "TLS sessions resumed" in out and "errors none" in out, out
    resumed, streams = _streams(out)
    assert streams > 0 and resumed == streams  # each agent connected once before the phase
    assert re.search(r"event loop \d+%", out), out


def test_without_resumption_every_report_makes_a_full_handshake() -> None:
    out = _run("benchmarks.loadgen", *TINY, "--no-resume")
    assert "a full TLS handshake each" in out and "errors none" in out, out
    resumed, streams = _streams(out)
    assert streams > 0 and resumed == 0


def test_the_handshake_benchmark_prints_full_and_resumed_costs() -> None:
    out = _run("benchmarks.handshake", "--connections", "40", "--rounds", "1", "--mode", "mtls")
    rows = re.findall(r"\| mtls \| (full|resumed) \| ([\d.]+) \|", out)
    assert sorted(kind for kind, _ in rows) == ["full", "resumed"], out
    assert all(float(ms) > 0 for _, ms in rows), out
