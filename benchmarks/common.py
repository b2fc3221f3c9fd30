"""What every benchmark shares: statistics, result tables, measured child processes, and a
real collector process to measure against.

Figures are medians of several runs (GOALS.md: the machines are shared and noisy). A child's
CPU time comes from ``wait4``'s rusage, the kernel's own accounting of that process and the
children it waited for; its peak memory from its own ``VmHWM`` (see ``_PeakWatcher``).
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from collector.tls import LocalPki, ensure_local_pki

__all__ = [
    "POLICIES",
    "ROOT",
    "CollectorProcess",
    "Measure",
    "Usage",
    "measure",
    "median",
    "percentile",
    "print_table",
    "raise_file_limit",
    "run_measured",
]

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.99 for p99), nearest-rank: a value that was observed."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Measure:
    """One line of a result table: a median over runs, and the target it answers to."""

    name: str
    values: tuple[float, ...]
    unit: str
    target: str = ""
    #: True when the median meets the target, None when there is no target to meet.
    met: bool | None = None

    @property
    def median(self) -> float:
        return median(self.values)

    def verdict(self) -> str:
        return {True: "met", False: "NOT MET", None: ""}[self.met]


def measure(
    name: str,
    values: Sequence[float],
    unit: str,
    target: float | None = None,
    target_text: str = "",
) -> Measure:
    """A measure whose target is an upper bound (most are: less is better)."""
    met = None if target is None else median(values) <= target
    text = target_text or ("" if target is None else f"<= {target:g} {unit}")
    return Measure(name, tuple(values), unit, text, met)


def _number(value: float) -> str:
    if value != value:  # NaN: not measured
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_table(title: str, measures: Sequence[Measure], out: IO[str] = sys.stdout) -> None:
    """A Markdown table, so the output pastes into docs/performance.md unchanged."""
    out.write(f"\n### {title}\n\n")
    out.write("| measure | median | unit | runs | target | verdict |\n")
    out.write("| --- | ---: | --- | ---: | --- | --- |\n")
    for m in measures:
        row = [m.name, _number(m.median), m.unit, str(len(m.values)), m.target, m.verdict()]
        out.write("| " + " | ".join(row) + " |\n")
    out.flush()


@dataclass(frozen=True)
class Usage:
    """What a finished child process cost: CPU seconds, peak RSS in MB, wall seconds."""

    cpu_seconds: float
    peak_rss_mb: float
    wall_seconds: float
    returncode: int
    stdout: str


class _PeakWatcher:
    """Follows a child's ``VmHWM`` (its peak resident set since its exec) until it exits.

    ``wait4``'s ``ru_maxrss`` cannot be used for memory: Linux carries the parent's peak
    into a child at exec (the child starts as a copy of the parent), so every child of a
    large benchmark process would report at least the parent's size. ``VmHWM`` belongs to
    the child's own address space; it only grows, so the last reading is the peak but for
    the final few milliseconds.
    """

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = self._status.read_text()
            except OSError:  # gone, or a zombie without memory
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            self._stop.wait(self._interval)

    def stop(self) -> float:
        """The peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def run_measured(
    command: Sequence[str], *, cwd: Path | None = None, timeout: float = 900.0
) -> Usage:
    """Run ``command`` to completion: CPU from ``wait4``, peak RSS from ``VmHWM``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    peak = _PeakWatcher(process.pid)
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.stdout.close()
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Usage(
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak.stop(),
        wall_seconds=time.perf_counter() - started,
        returncode=process.returncode,
        stdout=stdout,
    )


def raise_file_limit() -> None:
    """Thousands of simulated agents hold thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class CollectorProcess:
    """A real ``posture-collector serve`` on 127.0.0.1 with TLS, in a work directory."""

    workdir: Path
    interval: int = 300
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    address: str = ""
    pki: LocalPki | None = None

    @property
    def db(self) -> Path:
        return self.workdir / "collector.db"

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = ensure_local_pki(self.workdir / "tls")
        command = [
            sys.executable, "-m", "collector", "serve", "--db", str(self.db),
            "--listen", "127.0.0.1:0", "--tls-cert", str(self.pki.server_cert),
            "--tls-key", str(self.pki.server_key), "--policies", str(POLICIES),
            "--interval", str(self.interval), *self.extra,
        ]  # fmt: skip
        log = (self.workdir / "collector.log").open("ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"collector did not start: {(self.workdir / 'collector.log')}")
        self.address = line.rsplit(" ", 1)[1].strip()
        return self.address

    def cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "collector", *args, "--db", str(self.db),
                   "--policies", str(POLICIES)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        return done.stdout

    def enroll_secret(self) -> str:
        return self.cli("enroll-secret", "create", "bench").strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> CollectorProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
