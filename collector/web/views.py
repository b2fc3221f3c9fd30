"""View models of the dashboard: what each page shows, computed from the domain.

The fleet pages (overview, groups, hosts, checks) read one **fleet summary**: every host
with its groups, staleness, score and failing checks, plus the fleet's and each group's
scores, built in one pass over the hosts' latest statuses (no evidence parsed) with the
same rules as ``PostureService.host_view`` (stale results read as unknown, waivers cover
failures and errors). Filtering, sorting and paging 50,000 hosts then happen in memory.

The summary is rebuilt when the store's fingerprint (results, hosts, waivers, group rules,
secrets, the clock's minute) changes, but not more often than five times its own build
time, so a large busy fleet does not spend its store worker on rebuilding; pages state the
instant their summary describes. Host, check and waiver pages read the domain directly.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from collector.drift import EventKind, StoredEvent
from collector.groups import host_groups
from collector.model import Host, StoredResult
from collector.policy.model import Check, Severity, Status
from collector.scoring import BUCKETS, FleetScore, HostScore
from collector.service import HostView, PostureService, ServiceError
from collector.waivers import Waiver, applicable_waiver

__all__ = [
    "PAGE_SIZE",
    "SORTS",
    "CheckRow",
    "FactTable",
    "FleetSummary",
    "HostDetail",
    "HostFilter",
    "HostPage",
    "HostRow",
    "SummaryCache",
    "TrendCache",
    "TrendPoint",
    "build_summary",
    "filter_hosts",
    "host_detail",
    "score_trend",
    "worst_checks",
]

PAGE_SIZE = 50
T = TypeVar("T")
_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.HIGH: 1, Severity.MEDIUM: 2, Severity.LOW: 3}


@dataclass(frozen=True)
class HostRow:
    """One host as the fleet pages list it; ``failing`` is ordered most severe first."""

    host: Host
    groups: tuple[str, ...]
    stale: bool
    score: HostScore
    failing: tuple[str, ...]
    severe_failure: bool

    @property
    def hostname(self) -> str:
        return self.host.identity.hostname


@dataclass(frozen=True)
class CheckRow:
    """One check across the fleet: how many hosts fail, pass, error or are waived."""

    check: Check
    counts: Mapping[Status, int]
    waived: int

    @property
    def failing(self) -> int:
        return self.counts.get(Status.FAIL, 0)

    @property
    def judged(self) -> int:
        return sum(self.counts.get(s, 0) for s in (Status.PASS, Status.FAIL, Status.ERROR))


@dataclass(frozen=True)
class FleetSummary:
    at: datetime
    hosts: tuple[HostRow, ...]
    fleet: FleetScore
    groups: dict[str, FleetScore]
    checks: dict[str, CheckRow]
    failing_hosts: dict[str, tuple[int, ...]]
    by_id: dict[int, HostRow] = field(default_factory=dict)


#: (severity, status, waived) -> how many of a host's (or group's) results are so.
Counts = Counter[tuple[Severity, Status, bool]]
_JUDGED = (Status.PASS, Status.FAIL, Status.ERROR)


def _score(counts: Counts) -> tuple[HostScore, bool]:
    """``collector.scoring.host_score`` over counted results (a host has a few dozen
    distinct triples, a fleet millions of results): the same sums, once per triple. Also
    whether a high or critical check fails. Tests hold it equal to the domain's."""
    by_status = dict.fromkeys(Status, 0)
    weight_judged = weight_passed = weight_waived = waived = 0
    severe = False
    for (severity, status, is_waived), n in counts.items():
        by_status[status] += n
        if status in _JUDGED:
            weight_judged += severity.weight * n
        if status is Status.PASS:
            weight_passed += severity.weight * n
        elif is_waived and status in (Status.FAIL, Status.ERROR):
            waived += n
            weight_waived += severity.weight * n
        severe |= status is Status.FAIL and severity in (Severity.HIGH, Severity.CRITICAL)
    verdicts = by_status[Status.PASS] + by_status[Status.FAIL]
    applicable = verdicts + by_status[Status.ERROR] + by_status[Status.UNKNOWN]
    score = HostScore(
        percent=100.0 * weight_passed / weight_judged if weight_judged else None,
        passed=by_status[Status.PASS],
        failed=by_status[Status.FAIL],
        errors=by_status[Status.ERROR],
        notapplicable=by_status[Status.NOTAPPLICABLE],
        unknown=by_status[Status.UNKNOWN],
        coverage=verdicts / applicable if applicable else None,
        waived=waived,
        adjusted_percent=(
            100.0 * (weight_passed + weight_waived) / weight_judged if weight_judged else None
        ),
    )
    return score, severe


def _fleet(hosts: Iterable[tuple[Counts, HostScore, bool]]) -> FleetScore:
    """``collector.scoring.fleet_score`` over hosts already counted and scored."""
    total: Counts = Counter()
    distribution = dict.fromkeys((label for label, _ in BUCKETS), 0)
    count = unscored = without_severe = 0
    for counts, score, severe in hosts:
        total.update(counts)
        count += 1
        without_severe += not severe
        if score.percent is None:
            unscored += 1
        else:
            label = next(name for name, low in reversed(BUCKETS) if score.percent >= low)
            distribution[label] += 1
    fleet, _ = _score(total)
    return FleetScore(
        percent=fleet.percent,
        hosts=count,
        passed=fleet.passed,
        failed=fleet.failed,
        errors=fleet.errors,
        notapplicable=fleet.notapplicable,
        unknown=fleet.unknown,
        share_without_severe_failures=without_severe / count if count else None,
        distribution=distribution,
        unscored=unscored,
        waived=fleet.waived,
        adjusted_percent=fleet.adjusted_percent,
    )


@dataclass
class _Tallies:
    """What one pass over the fleet's statuses gathers."""

    hosts: dict[int, Counts] = field(default_factory=lambda: defaultdict(Counter))
    checks: dict[str, Counter[Status]] = field(default_factory=lambda: defaultdict(Counter))
    waived: Counter[str] = field(default_factory=Counter)
    failing: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))


def _tally(service: PostureService, hosts: Sequence[Host], groups: Mapping[int, tuple[str, ...]],
           now: datetime) -> _Tallies:  # fmt: skip
    """Count every host's results by (severity, status, waived), as ``host_view`` reads
    them: stale hosts' results as unknown, failures and errors a waiver covers as waived."""
    store, checks = service.store, service.checks
    severity = {check_id: check.severity for check_id, check in checks.items()}
    stale = {host.id for host in hosts if service.is_stale(host)}
    waivers: dict[str, list[Waiver]] = defaultdict(list)
    for waiver in store.list_waivers():
        waivers[waiver.check_id].append(waiver)
    statuses = {status.value: status for status in Status}
    tallies = _Tallies()
    for host_id, check_id, text in store.result_statuses():
        check_severity = severity.get(check_id)
        if check_severity is None or host_id not in groups:
            continue
        status = statuses[text]
        if host_id in stale and status is not Status.NOTAPPLICABLE:
            status = Status.UNKNOWN
        waived = False
        if status is Status.FAIL or status is Status.ERROR:
            covering = waivers.get(check_id)
            if covering:
                found = applicable_waiver(covering, host_id, groups[host_id], check_id, now)
                waived = found is not None
                tallies.waived[check_id] += waived
            if status is Status.FAIL:
                tallies.failing[host_id].append(check_id)
        tallies.hosts[host_id][(check_severity, status, waived)] += 1
        tallies.checks[check_id][status] += 1
    return tallies


def build_summary(service: PostureService) -> FleetSummary:
    """Summarise every host as ``service.host_view`` would, in one pass over the statuses."""
    store, checks, now = service.store, service.checks, service.clock()
    hosts = store.list_hosts()
    rules, secret_groups = store.group_rules(), store.host_secret_groups()
    groups = {
        host.id: host_groups(host.identity.hostname, secret_groups.get(host.id), rules, now)
        for host in hosts
    }
    tallies = _tally(service, hosts, groups, now)
    rows: list[HostRow] = []
    scored: dict[int, tuple[Counts, HostScore, bool]] = {}
    members: dict[str, list[int]] = defaultdict(list)
    for host in hosts:
        counts = tallies.hosts.get(host.id, Counter())
        score, severe = _score(counts)
        scored[host.id] = (counts, score, severe)
        failing = tuple(by_severity(tallies.failing.get(host.id, ()), checks))
        rows.append(HostRow(host, groups[host.id], service.is_stale(host), score, failing, severe))
        for group in groups[host.id]:
            members[group].append(host.id)
    failing_hosts: dict[str, list[int]] = defaultdict(list)
    for host_id, failed in tallies.failing.items():
        for check_id in failed:
            failing_hosts[check_id].append(host_id)
    return FleetSummary(
        at=now,
        hosts=tuple(rows),
        fleet=_fleet(scored[host.id] for host in hosts),
        groups={g: _fleet(scored[i] for i in members[g]) for g in sorted(members)},
        checks={
            check_id: CheckRow(
                check, dict(tallies.checks.get(check_id, {})), tallies.waived[check_id]
            )
            for check_id, check in checks.items()
        },
        failing_hosts={c: tuple(sorted(ids)) for c, ids in failing_hosts.items()},
        by_id={row.host.id: row for row in rows},
    )


class _Held(ABC, Generic[T]):
    """The last result of a fleet-wide ``build`` (the summary, the trend), rebuilt when the
    store changed and it is not too fresh.

    Called from the web's reader threads with a reader service (its own connection), so a
    rebuild never holds up ingest; a lock makes concurrent pages share one rebuild.
    ``invalidate`` forces the next read to rebuild (after a change made through the
    dashboard itself).
    """

    #: A result is kept at least this many times its build time once the store changed.
    HOLD_FACTOR = 5.0

    def __init__(self) -> None:
        self.value: T | None = None
        self.fingerprint: tuple[object, ...] = ()
        self.built_monotonic = 0.0
        self.build_seconds = 0.0
        self.dirty = False
        self._lock = threading.Lock()

    @abstractmethod
    def build(self, service: PostureService) -> T: ...

    def invalidate(self) -> None:
        self.dirty = True

    def get(self, service: PostureService) -> T:
        with self._lock:
            return self._get(service)

    def _get(self, service: PostureService) -> T:
        minute = service.clock().replace(second=0, microsecond=0)
        fingerprint = (*service.store.dashboard_fingerprint(), minute)
        started = time.monotonic()
        held = started - self.built_monotonic < self.HOLD_FACTOR * self.build_seconds
        fresh = fingerprint == self.fingerprint or held
        if self.value is not None and not self.dirty and fresh:
            return self.value
        self.value = self.build(service)
        self.fingerprint, self.dirty = fingerprint, False
        self.built_monotonic = time.monotonic()
        self.build_seconds = self.built_monotonic - started
        return self.value


class SummaryCache(_Held[FleetSummary]):
    """The fleet summary the API and the pages share (``WebContext.summaries``)."""

    def build(self, service: PostureService) -> FleetSummary:
        return build_summary(service)


class TrendCache(_Held[list["TrendPoint"]]):
    """The overview's score trend (replaying transitions costs as much as a summary)."""

    def build(self, service: PostureService) -> list[TrendPoint]:
        return score_trend(service)


# Hosts list -------------------------------------------------------------------------------


#: Sort keys of the hosts list; unscored hosts sort after scored ones either way.
SORTS = ("hostname", "score", "failed", "last_seen", "platform")


@dataclass(frozen=True)
class HostFilter:
    """The hosts list's query: search text, filters, sort and page (1-based)."""

    q: str = ""
    group: str = ""
    platform: str = ""
    check: str = ""
    min_score: float | None = None
    max_score: float | None = None
    stale: bool | None = None
    sort: str = "hostname"
    descending: bool = False
    page: int = 1

    def matches(self, row: HostRow) -> bool:
        identity = row.host.identity
        if self.q:
            needle = self.q.lower()
            haystack = (identity.hostname, identity.hardware_uuid, identity.hardware_serial)
            if not any(needle in value.lower() for value in haystack) and self.q != str(
                row.host.id
            ):
                return False
        if self.group and self.group not in row.groups:
            return False
        if self.platform and identity.platform != self.platform:
            return False
        if self.check and self.check not in row.failing:
            return False
        if self.stale is not None and row.stale != self.stale:
            return False
        percent = row.score.percent
        if self.min_score is not None and (percent is None or percent < self.min_score):
            return False
        return self.max_score is None or (percent is not None and percent <= self.max_score)


@dataclass(frozen=True)
class HostPage:
    rows: tuple[HostRow, ...]
    total: int
    page: int
    pages: int


def _sort_key(sort: str, descending: bool) -> tuple[object, ...] | object:
    def key(row: HostRow) -> tuple[object, ...]:
        if sort == "score":
            percent = row.score.percent
            missing = percent is None
            value = 0.0 if percent is None else (-percent if descending else percent)
            return (missing, value, row.hostname)
        if sort == "failed":
            return (row.score.failed, row.hostname)
        if sort == "last_seen":
            seen = row.host.last_collected_at
            return (seen is not None, seen.timestamp() if seen else 0.0, row.hostname)
        if sort == "platform":
            return (row.host.identity.platform, row.hostname)
        return (row.hostname.lower(), row.host.id)

    return key


def filter_hosts(summary: FleetSummary, query: HostFilter) -> HostPage:
    """One page of the hosts matching ``query``, sorted as it asks."""
    matched = [row for row in summary.hosts if query.matches(row)]
    reverse = query.descending and query.sort != "score"
    matched.sort(key=_sort_key(query.sort, query.descending), reverse=reverse)  # type: ignore[arg-type]
    pages = max(1, -(-len(matched) // PAGE_SIZE))
    page = min(max(1, query.page), pages)
    start = (page - 1) * PAGE_SIZE
    return HostPage(tuple(matched[start : start + PAGE_SIZE]), len(matched), page, pages)


# Overview ---------------------------------------------------------------------------------


def worst_checks(summary: FleetSummary, limit: int = 10) -> list[CheckRow]:
    """Checks failing on the most hosts, the most severe first among equals."""
    failing = [row for row in summary.checks.values() if row.failing]
    failing.sort(key=lambda r: (-r.failing, _SEVERITY_RANK[r.check.severity], r.check.id))
    return failing[:limit]


@dataclass(frozen=True)
class TrendPoint:
    at: datetime
    percent: float | None


class _TrendTally:
    """Severity-weighted pass / judged over the (host, check) statuses as they change."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = weights
        self.status: dict[tuple[int, str], str] = {}
        self.passed = 0
        self.judged = 0

    def set(self, host_id: int, check_id: str, status: str) -> None:
        weight = self.weights.get(check_id)
        if weight is None:
            return
        self._count(self.status.get((host_id, check_id)), weight, -1)
        self.status[(host_id, check_id)] = status
        self._count(status, weight, 1)

    def _count(self, status: str | None, weight: int, sign: int) -> None:
        if status in ("pass", "fail", "error"):
            self.judged += sign * weight
        if status == "pass":
            self.passed += sign * weight

    @property
    def percent(self) -> float | None:
        return 100.0 * self.passed / self.judged if self.judged else None


def score_trend(service: PostureService, days: int = 30, points: int = 30) -> list[TrendPoint]:
    """The fleet's raw score at ``points`` instants over the last ``days`` (or since the
    first result), replayed from status transitions: staleness and waivers are left out,
    so the line shows what hosts reported, not when they went quiet."""
    store, now = service.store, service.clock()
    first = store.first_result_at()
    if first is None:
        return []
    start = max(now - timedelta(days=days), first)
    step = (now - start) / max(1, points - 1)
    tally = _TrendTally({c.id: c.severity.weight for c in service.checks.values()})
    for host_id, check_id, status in store.statuses_as_of(start):
        tally.set(host_id, check_id, status)
    changes = store.status_changes(start, now)
    trend, index = [], 0
    for n in range(points):
        at = start + step * n if n < points - 1 else now
        stamp = at.astimezone(UTC).isoformat(timespec="microseconds")
        while index < len(changes) and changes[index][0] <= stamp:
            _, host_id, check_id, status = changes[index]
            tally.set(host_id, check_id, status)
            index += 1
        trend.append(TrendPoint(at, tally.percent))
    return trend


def newest_drift(
    service: PostureService,
    limit: int,
    before_id: int | None = None,
    kind: EventKind | None = None,
    host_ids: Iterable[int] | None = None,
) -> list[StoredEvent]:
    ids = None if host_ids is None else frozenset(host_ids)
    return service.store.newest_drift(limit, before_id, kind, ids)


def by_severity(check_ids: Sequence[str], checks: Mapping[str, Check]) -> list[str]:
    return sorted(check_ids, key=lambda c: (_SEVERITY_RANK[checks[c].severity], c))


# Host page --------------------------------------------------------------------------------

#: Results are listed failures first, then by severity.
_STATUS_ORDER = {
    Status.FAIL: 0,
    Status.ERROR: 1,
    Status.UNKNOWN: 2,
    Status.PASS: 3,
    Status.NOTAPPLICABLE: 4,
}
#: Rows of one fact table shown on the host page (the rest are counted, not shown).
FACT_ROWS_SHOWN = 200


@dataclass(frozen=True)
class ResultItem:
    result: StoredResult
    check: Check
    waived: bool
    evidence_columns: tuple[str, ...]

    @property
    def can_waive(self) -> bool:
        return self.result.status in (Status.FAIL, Status.ERROR) and not self.waived


@dataclass(frozen=True)
class FactTable:
    name: str
    error: str
    collected_at: datetime
    total: int
    columns: tuple[str, ...]
    rows: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class HostDetail:
    view: HostView
    results: tuple[ResultItem, ...]
    facts: tuple[FactTable, ...]
    drift: tuple[StoredEvent, ...]
    waivers: tuple[Waiver, ...]


def _columns(rows: Iterable[Mapping[str, str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return tuple(seen)


def host_detail(service: PostureService, host_id: int, drift_limit: int = 100) -> HostDetail:
    """Everything the host page shows; ``ServiceError`` when there is no such host."""
    host = service.store.get_host(host_id)
    if host is None:
        raise ServiceError(f"no host {host_id}")
    view = service.host_view(host)
    checks = service.checks
    items = sorted(
        (
            ResultItem(r, checks[r.check_id], r.check_id in view.waived, _columns(r.evidence))
            for r in view.results
        ),
        key=lambda i: (
            _STATUS_ORDER[i.result.status],
            _SEVERITY_RANK[i.check.severity],
            i.check.id,
        ),
    )
    facts = []
    for name, state in sorted(service.store.table_states(host.id).items()):
        rows = service.store.host_rows(host.id, name)
        shown = tuple(rows[:FACT_ROWS_SHOWN])
        facts.append(
            FactTable(name, state.error, state.collected_at, len(rows), _columns(shown), shown)
        )
    waivers = tuple(
        w for w in service.store.list_waivers() if w.covers(host.id, view.groups, w.check_id)
    )
    drift = tuple(service.store.newest_drift(drift_limit, host_ids=frozenset({host.id})))
    return HostDetail(view, tuple(items), tuple(facts), drift, waivers)
