"""The agent's resource guard and probe backoff, on this real process and a test clock."""

from __future__ import annotations

import psutil

from agent.guard import GuardLimits, ProbeBackoff, ResourceGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_over_the_limit_is_reported_with_figures() -> None:
    rss_mb = psutil.Process().memory_info().rss / 1e6
    assert ResourceGuard(GuardLimits(max_rss_mb=rss_mb * 10)).over_limit() is None
    reason = ResourceGuard(GuardLimits(max_rss_mb=1)).over_limit()
    assert reason is not None and "over the 1 MB limit" in reason


def test_cpu_is_judged_over_a_window_of_real_work() -> None:
    clock = Clock()
    guard = ResourceGuard(
        GuardLimits(max_rss_mb=1e6, max_cpu_percent=1, cpu_window_seconds=1), clock=clock
    )
    sum(i * i for i in range(2_000_000))  # burn real CPU time
    assert guard.over_limit() is None  # the window has not elapsed yet
    clock.now += 1.0
    reason = guard.over_limit()
    assert reason is not None and "over the 1.0 % limit" in reason
    clock.now += 1000.0  # a quiet window after: well under the limit again
    assert guard.over_limit() is None


def test_a_failing_probe_is_paused_with_doubling_backoff_and_resumed_on_success() -> None:
    clock = Clock()
    backoff = ProbeBackoff(threshold=2, first_pause_seconds=60, max_pause_seconds=200, clock=clock)
    backoff.record("bitlocker_info", "timed out after 10 s")
    assert backoff.paused("bitlocker_info") is None
    backoff.record("bitlocker_info", "timed out after 10 s")
    reason = backoff.paused("bitlocker_info")
    assert reason is not None and "2 failures" in reason and "timed out" in reason
    clock.now += 61
    assert backoff.paused("bitlocker_info") is None
    backoff.record("bitlocker_info", "timed out again")
    clock.now += 119
    assert backoff.paused("bitlocker_info") is not None  # second pause: 120 s
    clock.now += 2
    backoff.record("bitlocker_info", "still failing")
    clock.now += 199
    assert backoff.paused("bitlocker_info") is not None  # capped at 200 s
    clock.now += 2
    backoff.record("bitlocker_info", None)
    backoff.record("bitlocker_info", "one new failure")
    assert backoff.paused("bitlocker_info") is None  # success reset the count
