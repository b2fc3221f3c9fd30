"""The agent's resource guard: it must never become the problem on a city laptop.

Two mechanisms, both modelled on osquery's watchdog but with lower defaults:

- ``ResourceGuard`` watches the agent's own memory and CPU. Over the limit, the daemon
  restarts itself cleanly (spool closed, process re-executed), which returns any leaked
  memory to the system; the spool keeps every batch across the restart.
- ``ProbeBackoff`` pauses a table whose probe keeps failing or timing out, doubling the pause
  each time, so a broken probe costs one failure per pause instead of one per collection.
  A paused table is reported with its reason, never silently dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

__all__ = ["GuardLimits", "ProbeBackoff", "ResourceGuard", "RestartRequested"]


class RestartRequested(Exception):
    """The agent is over its limits and should re-execute itself; the message says why."""


@dataclass(frozen=True)
class GuardLimits:
    #: Resident memory the agent may use (osquery's watchdog default is 200 MB).
    max_rss_mb: float = 150.0
    #: Share of one core the agent may use, averaged over ``cpu_window_seconds``
    #: (osquery's default is 10 % over 12 s).
    max_cpu_percent: float = 5.0
    cpu_window_seconds: float = 60.0


class ResourceGuard:
    """Says when this process is over its limits, and why."""

    def __init__(
        self,
        limits: GuardLimits,
        process: psutil.Process | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._process = process or psutil.Process()
        self._clock = clock
        self._window_start = clock()
        self._cpu_at_start = self._cpu_seconds()

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def over_limit(self) -> str | None:
        """The reason to restart, or None while within limits."""
        rss_mb = self._process.memory_info().rss / 1e6
        if rss_mb > self.limits.max_rss_mb:
            return f"memory {rss_mb:.0f} MB is over the {self.limits.max_rss_mb:.0f} MB limit"
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < self.limits.cpu_window_seconds:
            return None
        cpu = self._cpu_seconds()
        percent = 100.0 * (cpu - self._cpu_at_start) / elapsed
        self._window_start, self._cpu_at_start = now, cpu
        if percent > self.limits.max_cpu_percent:
            return (
                f"CPU {percent:.1f} % of a core over {elapsed:.0f} s is over the"
                f" {self.limits.max_cpu_percent:.1f} % limit"
            )
        return None


@dataclass
class _Failures:
    count: int = 0
    paused_until: float = 0.0
    last_error: str = ""


@dataclass
class ProbeBackoff:
    """Per-table failure tracking: after ``threshold`` failures in a row, pause the table."""

    threshold: int = 3
    first_pause_seconds: float = 300.0
    max_pause_seconds: float = 24 * 3600.0
    clock: Callable[[], float] = time.monotonic
    _tables: dict[str, _Failures] = field(default_factory=dict)

    def paused(self, table: str) -> str | None:
        """Why ``table`` is not probed this time, or None when it should be."""
        failures = self._tables.get(table)
        if failures is None or self.clock() >= failures.paused_until:
            return None
        # No countdown in the text: the table's digest, and so the wire, must stay quiet.
        return (
            f"probe paused after {failures.count} failures in a row, retried after a growing"
            f" pause; last: {failures.last_error}"
        )

    def record(self, table: str, error: str | None) -> None:
        """Note the outcome of probing ``table`` (None = it worked)."""
        if error is None:
            self._tables.pop(table, None)
            return
        failures = self._tables.setdefault(table, _Failures())
        failures.count += 1
        failures.last_error = error
        if failures.count >= self.threshold:
            doublings = failures.count - self.threshold
            pause = min(self.first_pause_seconds * 2**doublings, self.max_pause_seconds)
            failures.paused_until = self.clock() + pause
