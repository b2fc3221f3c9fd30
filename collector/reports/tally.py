"""Scores accumulated while a report streams: one host's, then its groups' and the fleet's.

``collector.scoring`` scores a list of results; a streamed report sees each result once and
keeps no list, so it adds each result to the host's ``Tally`` and merges the host's tally
into the fleet's and each of its groups' ``FleetTally``. The formula is scoring's (DESIGN
§6): weights are integers, so merged sums give exactly the percentages scoring computes
over the same results (``tests/collector/test_report_tally.py`` holds the two equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.policy.model import Check, Severity, Status
from collector.scoring import BUCKETS

__all__ = ["FleetTally", "Tally", "check_weights"]

_PASS, _FAIL, _ERROR = Status.PASS.value, Status.FAIL.value, Status.ERROR.value
_SEVERE = frozenset({Severity.HIGH, Severity.CRITICAL})
_STATUSES = tuple(s.value for s in Status)
#: ``BUCKETS`` highest first: a host's bucket is the first whose lowest percent it reaches.
_DESCENDING = tuple(reversed(BUCKETS))


def check_weights(checks: Mapping[str, Check]) -> dict[str, tuple[int, bool]]:
    """Per check: (severity weight, whether a failure is a high or critical one)."""
    return {cid: (c.severity.weight, c.severity in _SEVERE) for cid, c in checks.items()}


def _percent(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class Tally:
    """Counts and weights of one host's results (or of many, merged)."""

    __slots__ = ("counts", "judged", "passed_weight", "severe", "waived", "waived_weight")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_STATUSES, 0)
        self.passed_weight = self.waived_weight = self.judged = self.waived = 0
        self.severe = False

    def add(self, weight: tuple[int, bool], status: str, waived: bool) -> None:
        self.counts[status] += 1
        if status == _PASS:
            self.passed_weight += weight[0]
            self.judged += weight[0]
        elif status in (_FAIL, _ERROR):
            self.judged += weight[0]
            if waived:
                self.waived += 1
                self.waived_weight += weight[0]
            if status == _FAIL and weight[1]:
                self.severe = True

    def merge(self, other: Tally) -> None:
        for status, count in other.counts.items():
            self.counts[status] += count
        self.passed_weight += other.passed_weight
        self.waived_weight += other.waived_weight
        self.judged += other.judged
        self.waived += other.waived

    @property
    def percent(self) -> float | None:
        return 100.0 * self.passed_weight / self.judged if self.judged else None

    @property
    def adjusted_percent(self) -> float | None:
        if not self.judged:
            return None
        return 100.0 * (self.passed_weight + self.waived_weight) / self.judged

    def _counts(self) -> dict[str, Any]:
        c = self.counts
        return {
            "passed": c[_PASS],
            "failed": c[_FAIL],
            "errors": c[_ERROR],
            "notapplicable": c[Status.NOTAPPLICABLE.value],
            "unknown": c[Status.UNKNOWN.value],
            "waived": self.waived,
        }

    def coverage(self) -> float | None:
        c = self.counts
        verdicts = c[_PASS] + c[_FAIL]
        applicable = verdicts + c[_ERROR] + c[Status.UNKNOWN.value]
        return verdicts / applicable if applicable else None

    def host_document(self) -> dict[str, Any]:
        """The host's ``score`` object of the report."""
        return {
            "raw_percent": _percent(self.percent),
            "adjusted_percent": _percent(self.adjusted_percent),
            "coverage": _share(self.coverage()),
            **self._counts(),
        }


class FleetTally:
    """A group's or the fleet's score: every host's tally merged, and per-host figures."""

    def __init__(self) -> None:
        self.total = Tally()
        self.hosts = self.unscored = self.without_severe = 0
        self.distribution = dict.fromkeys((label for label, _ in BUCKETS), 0)

    def add_host(self, host: Tally) -> None:
        self.total.merge(host)
        self.hosts += 1
        self.without_severe += not host.severe
        percent = host.percent
        if percent is None:
            self.unscored += 1
        else:
            for label, low in _DESCENDING:
                if percent >= low:
                    self.distribution[label] += 1
                    break

    def merge(self, other: FleetTally) -> None:
        """Add another set of hosts' figures (a report split across processes)."""
        self.total.merge(other.total)
        self.hosts += other.hosts
        self.unscored += other.unscored
        self.without_severe += other.without_severe
        for label, count in other.distribution.items():
            self.distribution[label] += count

    def document(self) -> dict[str, Any]:
        """The ``summary`` (or a group's ``score``) object of the report."""
        total = self.total
        return {
            "raw_percent": _percent(total.percent),
            "adjusted_percent": _percent(total.adjusted_percent),
            "coverage": _share(total.coverage()),
            "hosts": self.hosts,
            **total._counts(),
            "share_without_severe_failures": _share(
                self.without_severe / self.hosts if self.hosts else None
            ),
            "distribution": dict(self.distribution),
            "unscored": self.unscored,
        }
