"""The fleet's compliance as of an instant, rebuilt from history: what every report reads.

A report without ``--as-of`` is a report as of the instant it was made (sealed in the
store, see ``collector.store.base``), so it and any later report as of that instant read the
same rows and show the same thing. Everything in a snapshot comes from history at the
instant: which hosts were enrolled, which groups they were in, their results and evidence,
when they last reported and were evaluated, whether they were stale, which waivers were in
force. Only the policy packs' text is today's (their versions and SHA-256 are stated).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.groups import host_groups
from collector.model import Host
from collector.policy.model import Check, Status
from collector.scoring import FleetScore, HostScore, Scored, fleet_score, host_score
from collector.store import HostActivity, ResultAt, SqliteStore
from collector.waivers import Waiver, applicable_waiver, lapsed_waiver

__all__ = [
    "STALE_AFTER_INTERVALS",
    "HostAsOf",
    "ResultAsOf",
    "Scope",
    "Snapshot",
    "is_stale",
    "stale_reason",
    "take_snapshot",
]

#: A host that has not reported for this many collection intervals is stale.
STALE_AFTER_INTERVALS = 2


def is_stale(last_collected_at: datetime | None, interval_seconds: int, at: datetime) -> bool:
    """Whether facts collected at ``last_collected_at`` are out of date at ``at``."""
    if last_collected_at is None:
        return True
    return at - last_collected_at > timedelta(seconds=STALE_AFTER_INTERVALS * interval_seconds)


def stale_reason(last_collected_at: datetime | None, status: Status) -> str:
    seen = last_collected_at.isoformat() if last_collected_at else "never"
    return f"host is stale (last collected {seen}); was {status.value}"


@dataclass(frozen=True)
class ResultAsOf:
    """A result as a report shows it: ``status``/``reason`` after the stale overlay (``raw``
    keeps the stored result), with the waiver covering it or the one that lapsed."""

    raw: ResultAt
    status: Status
    reason: str
    waiver: Waiver | None
    lapsed_waiver: Waiver | None

    @property
    def waived(self) -> bool:
        return self.waiver is not None and self.status in (Status.FAIL, Status.ERROR)


@dataclass(frozen=True)
class HostAsOf:
    host: Host
    groups: tuple[str, ...]
    activity: HostActivity
    stale: bool
    results: tuple[ResultAsOf, ...]
    score: HostScore


@dataclass(frozen=True)
class Scope:
    """Which hosts and checks a snapshot covers: None means all."""

    host_ids: frozenset[int] | None = None
    group: str | None = None
    check_ids: frozenset[str] | None = None


@dataclass(frozen=True)
class Snapshot:
    as_of: datetime
    scope: Scope
    hosts: tuple[HostAsOf, ...]
    waivers: tuple[Waiver, ...]
    fleet: FleetScore
    groups: dict[str, FleetScore]


def _scored(results: Sequence[ResultAsOf], checks: Mapping[str, Check]) -> list[Scored]:
    return [(checks[r.raw.check_id].severity, r.status, r.waived) for r in results]


def take_snapshot(
    store: SqliteStore, checks: Mapping[str, Check], at: datetime, scope: Scope
) -> Snapshot:
    """Everything a report states about ``scope`` as of ``at``, in one read transaction."""
    with store.read_snapshot():
        rules = store.group_rules()
        secret_groups = store.host_secret_groups()
        candidates = [
            host
            for host in store.hosts_enrolled_by(at)
            if scope.host_ids is None or host.id in scope.host_ids
        ]
        groups = {
            host.id: host_groups(host.identity.hostname, secret_groups.get(host.id), rules, at)
            for host in candidates
        }
        hosts = [h for h in candidates if scope.group is None or scope.group in groups[h.id]]
        ids = frozenset(host.id for host in hosts)
        activity = store.host_activity_as_of(at, ids)
        results = store.results_as_of(at, ids)
        waivers = tuple(w for w in store.list_waivers() if w.requested_at <= at)
    by_host: dict[int, list[ResultAt]] = defaultdict(list)
    for result in results:
        if result.check_id in checks and (
            scope.check_ids is None or result.check_id in scope.check_ids
        ):
            by_host[result.host_id].append(result)
    by_check: dict[str, list[Waiver]] = defaultdict(list)
    for waiver in waivers:
        by_check[waiver.check_id].append(waiver)
    views = tuple(
        _host_as_of(
            host, groups[host.id], activity[host.id], by_host[host.id], by_check, checks, at
        )
        for host in hosts
    )
    return Snapshot(
        at,
        scope,
        views,
        waivers,
        fleet_score(_scored(view.results, checks) for view in views),
        _group_scores(views, checks),
    )


def _host_as_of(
    host: Host,
    groups: tuple[str, ...],
    activity: HostActivity,
    results: Sequence[ResultAt],
    waivers: Mapping[str, Sequence[Waiver]],
    checks: Mapping[str, Check],
    at: datetime,
) -> HostAsOf:
    stale = is_stale(activity.last_collected_at, host.interval_seconds, at)
    shown = []
    for result in results:
        status, reason = result.status, result.reason
        if stale and status is not Status.NOTAPPLICABLE:
            status, reason = Status.UNKNOWN, stale_reason(activity.last_collected_at, status)
        covering = waivers.get(result.check_id, ())
        waiver = applicable_waiver(covering, host.id, groups, result.check_id, at)
        lapsed = None if waiver else lapsed_waiver(covering, host.id, groups, result.check_id, at)
        shown.append(ResultAsOf(result, status, reason, waiver, lapsed))
    score = host_score(_scored(shown, checks))
    return HostAsOf(host, groups, activity, stale, tuple(shown), score)


def _group_scores(hosts: Sequence[HostAsOf], checks: Mapping[str, Check]) -> dict[str, FleetScore]:
    members: dict[str, list[HostAsOf]] = defaultdict(list)
    for host in hosts:
        for group in host.groups:
            members[group].append(host)
    return {
        group: fleet_score(_scored(view.results, checks) for view in members[group])
        for group in sorted(members)
    }
