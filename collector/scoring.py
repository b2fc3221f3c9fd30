"""Scores from results: pure functions of (severity, status) pairs (DESIGN §6).

A score is the severity-weighted share of passing checks among those that could be judged
or should have been: ``Σw(pass) / Σw(pass + fail + error) * 100`` with weights 1/3/7/10 for
low/medium/high/critical. Errors count against the score (an auditor must not gain from a
check that could not run), while not-applicable and unknown results are left out; unknown
results lower ``coverage`` instead, the share of checks that produced a verdict. Scores are
always published beside their counts, so a 100 % from two checks is never mistaken for a
100 % from two hundred.

A ``waived`` result (a failure or error covered by an effective waiver) keeps its real
status: the raw score counts it as what it is, the waiver-adjusted score as compliant, and
reports show both side by side, so an exception never hides a finding. Results are given as
``(severity, status)`` or ``(severity, status, waived)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from collector.policy.model import Severity, Status

__all__ = ["BUCKETS", "FleetScore", "HostScore", "Scored", "fleet_score", "host_score"]

#: One result to score: (severity, status) or (severity, status, waived).
Scored = tuple[Severity, Status] | tuple[Severity, Status, bool]

#: Host score buckets of the fleet distribution: (label, lowest percent in the bucket).
BUCKETS: tuple[tuple[str, float], ...] = (
    ("0-49", 0.0),
    ("50-69", 50.0),
    ("70-89", 70.0),
    ("90-100", 90.0),
)
_SEVERE = frozenset({Severity.HIGH, Severity.CRITICAL})


@dataclass(frozen=True)
class HostScore:
    """One host's score (0-100, None when no check was judged) and its counts.

    ``coverage`` (0-1) is (pass + fail) / (pass + fail + error + unknown): the share of the
    applicable checks that gave a verdict; None when no check applies. ``waived`` counts
    failures and errors covered by a waiver (they stay in ``failed``/``errors``);
    ``adjusted_percent`` is the score counting them as compliant.
    """

    percent: float | None
    passed: int
    failed: int
    errors: int
    notapplicable: int
    unknown: int
    coverage: float | None
    waived: int
    adjusted_percent: float | None


@dataclass(frozen=True)
class FleetScore:
    """A group's or the fleet's score over all its (host, check) pairs.

    ``share_without_severe_failures`` (0-1) is the share of hosts with no failing high or
    critical check. ``distribution`` counts scored hosts per bucket of ``BUCKETS`` (a
    bucket runs from its lower bound up to the next one's); ``unscored`` counts hosts
    without a score.
    """

    percent: float | None
    hosts: int
    passed: int
    failed: int
    errors: int
    notapplicable: int
    unknown: int
    share_without_severe_failures: float | None
    distribution: dict[str, int]
    unscored: int
    waived: int
    adjusted_percent: float | None


class _Tally:
    """Counts and weights of results; shared by host and fleet scores."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(Status, 0)
        self.weight_passed = 0
        self.weight_waived = 0
        self.weight_judged = 0
        self.waived = 0
        self.severe_failure = False

    def add(self, result: Scored) -> None:
        severity, status = result[0], result[1]
        self.counts[status] += 1
        if status in (Status.PASS, Status.FAIL, Status.ERROR):
            self.weight_judged += severity.weight
        if status is Status.PASS:
            self.weight_passed += severity.weight
        elif len(result) == 3 and result[2] and status in (Status.FAIL, Status.ERROR):
            self.waived += 1
            self.weight_waived += severity.weight
        if status is Status.FAIL and severity in _SEVERE:
            self.severe_failure = True

    @property
    def percent(self) -> float | None:
        if not self.weight_judged:
            return None
        return 100.0 * self.weight_passed / self.weight_judged

    @property
    def adjusted_percent(self) -> float | None:
        if not self.weight_judged:
            return None
        return 100.0 * (self.weight_passed + self.weight_waived) / self.weight_judged


def host_score(results: Iterable[Scored]) -> HostScore:
    """Score one host's results.

    >>> host_score([(Severity.HIGH, Status.PASS), (Severity.LOW, Status.FAIL)]).percent
    87.5
    """
    tally = _Tally()
    for result in results:
        tally.add(result)
    counts = tally.counts
    verdicts = counts[Status.PASS] + counts[Status.FAIL]
    applicable = verdicts + counts[Status.ERROR] + counts[Status.UNKNOWN]
    return HostScore(
        percent=tally.percent,
        passed=counts[Status.PASS],
        failed=counts[Status.FAIL],
        errors=counts[Status.ERROR],
        notapplicable=counts[Status.NOTAPPLICABLE],
        unknown=counts[Status.UNKNOWN],
        coverage=verdicts / applicable if applicable else None,
        waived=tally.waived,
        adjusted_percent=tally.adjusted_percent,
    )


def _bucket(percent: float) -> str:
    return next(label for label, lowest in reversed(BUCKETS) if percent >= lowest)


def fleet_score(hosts: Iterable[Iterable[Scored]]) -> FleetScore:
    """Score a set of hosts, each given as its results (a micro-average over all pairs,
    so a large group is not outweighed by a small one)."""
    fleet = _Tally()
    distribution = dict.fromkeys((label for label, _ in BUCKETS), 0)
    host_count = unscored = without_severe = 0
    for results in hosts:
        host = _Tally()
        for result in results:
            host.add(result)
            fleet.add(result)
        host_count += 1
        without_severe += not host.severe_failure
        percent = host.percent
        if percent is None:
            unscored += 1
        else:
            distribution[_bucket(percent)] += 1
    counts = fleet.counts
    return FleetScore(
        percent=fleet.percent,
        hosts=host_count,
        passed=counts[Status.PASS],
        failed=counts[Status.FAIL],
        errors=counts[Status.ERROR],
        notapplicable=counts[Status.NOTAPPLICABLE],
        unknown=counts[Status.UNKNOWN],
        share_without_severe_failures=without_severe / host_count if host_count else None,
        distribution=distribution,
        unscored=unscored,
        waived=fleet.waived,
        adjusted_percent=fleet.adjusted_percent,
    )
