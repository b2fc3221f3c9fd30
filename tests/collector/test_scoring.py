"""Scores, checked against numbers computed by hand (weights: low 1, medium 3, high 7,
critical 10)."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from collector.policy.model import Severity, Status
from collector.scoring import fleet_score, host_score

LOW, MEDIUM, HIGH, CRITICAL = Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL
PASS, FAIL, ERROR = Status.PASS, Status.FAIL, Status.ERROR
NA, UNKNOWN = Status.NOTAPPLICABLE, Status.UNKNOWN


def test_severity_weights() -> None:
    assert [severity.weight for severity in Severity] == [1, 3, 7, 10]


def test_host_score_weighs_by_severity_and_counts_every_status() -> None:
    results = [
        (CRITICAL, PASS),
        (HIGH, FAIL),
        (MEDIUM, ERROR),
        (LOW, PASS),
        (LOW, NA),
        (MEDIUM, UNKNOWN),
    ]
    # passed weight 10 + 1 = 11 of judged weight 10 + 7 + 3 + 1 = 21; verdicts 3 of 5.
    assert asdict(host_score(results)) == {
        "percent": pytest.approx(100 * 11 / 21),
        "passed": 2,
        "failed": 1,
        "errors": 1,
        "notapplicable": 1,
        "unknown": 1,
        "coverage": pytest.approx(0.6),
        "waived": 0,
        "adjusted_percent": pytest.approx(100 * 11 / 21),
    }


def test_an_error_counts_against_the_score_like_a_failure() -> None:
    assert host_score([(HIGH, PASS), (HIGH, ERROR)]).percent == 50.0


@pytest.mark.parametrize(
    ("results", "percent", "coverage"),
    [
        ([], None, None),
        ([(HIGH, NA)], None, None),
        ([(HIGH, UNKNOWN)], None, 0.0),
        ([(LOW, PASS), (HIGH, UNKNOWN)], 100.0, 0.5),
    ],
)
def test_nothing_judged_means_no_score(
    results: list[tuple[Severity, Status]], percent: float | None, coverage: float | None
) -> None:
    score = host_score(results)
    assert (score.percent, score.coverage) == (percent, coverage)


def test_fleet_score_is_a_micro_average_with_severe_failures_and_buckets() -> None:
    hosts = [
        [(CRITICAL, PASS), (HIGH, PASS)],  # 17/17 = 100
        [(CRITICAL, FAIL), (LOW, PASS)],  # 1/11 = 9.1, a critical failure
        [(MEDIUM, PASS), (MEDIUM, FAIL), (LOW, PASS)],  # 4/7 = 57.1
        [(LOW, NA)],  # no score
        [(HIGH, PASS), (HIGH, PASS), (LOW, FAIL)],  # 14/15 = 93.3
        [(HIGH, PASS), (MEDIUM, FAIL)],  # 7/10 = 70.0, on a bucket's lower bound
    ]
    assert asdict(fleet_score(hosts)) == {
        "percent": pytest.approx(100 * 43 / 60),  # not the mean of host scores (65.9)
        "hosts": 6,
        "passed": 8,
        "failed": 4,
        "errors": 0,
        "notapplicable": 1,
        "unknown": 0,
        "share_without_severe_failures": pytest.approx(5 / 6),
        "distribution": {"0-49": 1, "50-69": 1, "70-89": 1, "90-100": 2},
        "unscored": 1,
        "waived": 0,
        "adjusted_percent": pytest.approx(100 * 43 / 60),
    }


def test_a_failing_high_check_is_severe_and_an_erroring_one_is_not() -> None:
    score = fleet_score([[(HIGH, FAIL)], [(CRITICAL, ERROR)], [(MEDIUM, FAIL)]])
    assert score.share_without_severe_failures == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("passed_weight", "bucket"),
    [(4999, "0-49"), (5000, "50-69"), (8999, "70-89"), (9000, "90-100"), (10000, "90-100")],
)
def test_buckets_run_from_their_lower_bound(passed_weight: int, bucket: str) -> None:
    # passed_weight low passes out of 10,000 low checks: percent = passed_weight / 100.
    results = [(LOW, PASS)] * passed_weight + [(LOW, FAIL)] * (10000 - passed_weight)
    distribution = fleet_score([results]).distribution
    assert distribution[bucket] == 1 and sum(distribution.values()) == 1


def test_an_empty_fleet_has_no_score() -> None:
    score = fleet_score([])
    assert (score.percent, score.hosts, score.share_without_severe_failures) == (None, 0, None)
    assert score.distribution == {"0-49": 0, "50-69": 0, "70-89": 0, "90-100": 0}


def test_a_waived_failure_counts_as_compliant_only_in_the_adjusted_score() -> None:
    results = [(HIGH, PASS, False), (HIGH, FAIL, True), (LOW, ERROR, True), (MEDIUM, FAIL, False)]
    score = host_score(results)
    # raw: 7 / (7 + 7 + 1 + 3); adjusted: the waived 7 + 1 count as passed.
    assert score.percent == pytest.approx(100 * 7 / 18)
    assert score.adjusted_percent == pytest.approx(100 * 15 / 18)
    assert (score.passed, score.failed, score.errors, score.waived) == (1, 2, 1, 2)


def test_a_waiver_on_a_passing_or_unknown_result_changes_nothing() -> None:
    score = host_score([(HIGH, PASS, True), (HIGH, UNKNOWN, True), (LOW, FAIL, False)])
    assert score.waived == 0
    assert score.adjusted_percent == score.percent == pytest.approx(100 * 7 / 8)


def test_fleet_scores_carry_waivers_too() -> None:
    score = fleet_score([[(HIGH, FAIL, True)], [(HIGH, FAIL, False)]])
    assert (score.percent, score.adjusted_percent, score.waived) == (0.0, 50.0, 1)
    # A waived failure is still a severe failure for the share of hosts without one.
    assert score.share_without_severe_failures == 0.0
