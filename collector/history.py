"""The fleet's compliance as of an instant, rebuilt from history: what every report reads.

A report without ``--as-of`` is a report as of the instant it was made (sealed in the
store, see ``collector.store.base``), so it and any later report as of that instant read the
same rows and show the same thing. Everything in a snapshot comes from history at the
instant: which hosts were enrolled, which groups they were in, their results and evidence,
when they last reported and were evaluated, whether they were stale, which waivers were in
force. Only the policy packs' text is today's (their versions and SHA-256 are stated).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

from collector.groups import GroupRule, host_groups
from collector.model import Host
from collector.policy.model import Check, Status
from collector.scoring import FleetScore, HostScore, Scored, fleet_score, host_score
from collector.store import HostActivity, ResultAt, SqliteStore
from collector.store.report_reads import HostRow, ResultRow
from collector.waivers import Waiver, applicable_waiver, lapsed_waiver

__all__ = [
    "STALE_AFTER_INTERVALS",
    "FleetAsOf",
    "Given",
    "HostAsOf",
    "HostRecord",
    "ResultAsOf",
    "Scope",
    "Snapshot",
    "StoredRow",
    "canonical_evidence",
    "instant_text",
    "instants",
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


# Streaming: the fleet as of an instant, one host at a time ------------------------------

#: A stored result as a streamed report reads it, as stored: (host_id, check_id, status,
#: reason, evidence_sha256, status since, changed at). Instants are stored text: pass
#: them through ``instant_text``; a status is one of ``Status``'s values in a sound store.
StoredRow = ResultRow

_STATUSES = frozenset(status.value for status in Status)
_FAILING = frozenset({Status.FAIL.value, Status.ERROR.value})
#: Distinct evidence texts kept between pages (a fleet's failures share many).
_EVIDENCE_CACHE = 20_000


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One host as of the instant: identity, groups, activity (instants as report text),
    staleness, and its stored results (``StoredRow``, as stored) sorted by check id, in
    scope only. ``evidence`` maps the digests of the results that carry their evidence to
    its canonical JSON text."""

    id: int
    hostname: str
    hardware_uuid: str
    hardware_serial: str
    platform: str
    os_version: str
    agent_version: str
    enrolled_at: str
    groups: tuple[str, ...]
    last_seen_at: str | None
    facts_collected_at: str | None
    evaluated_at: str | None
    stale: bool
    last_collected: datetime | None
    results: list[StoredRow]
    evidence: Mapping[str, str]


_INSTANTS: dict[str, str] = {}


def instants() -> Mapping[str, str]:
    """The instants ``instant_text`` has seen, stored text -> report text: a hot loop may
    look a value up here first and call ``instant_text`` only when it is missing."""
    return _INSTANTS


def instant_text(stored: str) -> str:
    """A stored instant as reports spell it (``iso``), parsed once per distinct text: a
    fleet's results share few instants, and parsing also refuses a malformed one."""
    text = _INSTANTS.get(stored)
    if text is None:
        if len(_INSTANTS) >= 100_000:
            _INSTANTS.clear()
        text = datetime.fromisoformat(stored).isoformat(timespec="microseconds")
        _INSTANTS[stored] = text
    return text


#: ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` built
#: once: ``json.dumps`` with arguments builds an encoder per call, and a fleet report
#: converts one evidence text per failing result.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_evidence(stored: str) -> str:
    """Stored evidence JSON as canonical JSON (sorted keys, no whitespace, UTF-8)."""
    return _CANONICAL.encode(json.loads(stored))


@dataclass(frozen=True)
class Given:
    """What a report reads once, outside the per-host reads: the group rules and the
    waivers in force. A report split across processes reads them in the parent and hands
    them to every worker, so each part applies exactly the same ones (these rows are not
    stamped with the instant they were written, so a later read could differ)."""

    rules: tuple[GroupRule, ...]
    waivers: tuple[Waiver, ...]


class FleetAsOf:
    """The hosts of ``scope`` as of ``at``, read a page at a time inside one read
    transaction (use it as a context manager), so memory holds one page, never the fleet.

    ``evidence_for`` is ``"all"`` (every result carries its evidence rows) or
    ``"failing"`` (only results stored as fail or error do; the others keep their digest).
    ``id_range`` (after, upto) bounds the host ids read (one worker's part of a report);
    ``given`` supplies the rules and waivers instead of reading them (``Given``).
    """

    def __init__(
        self,
        store: SqliteStore,
        checks: Mapping[str, Check],
        at: datetime,
        scope: Scope,
        *,
        evidence_for: str = "all",
        page_size: int = 500,
        id_range: tuple[int, int | None] = (0, None),
        given: Given | None = None,
    ) -> None:
        if evidence_for not in ("all", "failing"):
            raise ValueError(f"evidence_for must be 'all' or 'failing', not {evidence_for!r}")
        self.store, self.at, self.scope = store, at, scope
        self.checks = {
            check_id: check
            for check_id, check in checks.items()
            if scope.check_ids is None or check_id in scope.check_ids
        }
        self.evidence_for = evidence_for
        self.page_size = page_size
        self.id_range = id_range
        self.given = given
        self.waivers: tuple[Waiver, ...] = ()
        #: Waivers by the check they name: a result whose check has none, on a host that
        #: is not stale, is shown as stored (``shown`` need not be asked).
        self.waivers_by_check: dict[str, list[Waiver]] = {}
        self._evidence: dict[str, str] = {}
        self._reading = False

    def __enter__(self) -> FleetAsOf:
        self._context = self.store.read_snapshot()
        self._context.__enter__()
        self._reading = True
        if self.given is None:
            rules = self.store.group_rules()
            waivers = tuple(w for w in self.store.list_waivers() if w.requested_at <= self.at)
            self.given = Given(tuple(rules), waivers)
        self._rules, self.waivers = list(self.given.rules), self.given.waivers
        for waiver in self.waivers:
            self.waivers_by_check.setdefault(waiver.check_id, []).append(waiver)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._reading = False
        self._context.__exit__(kind, error, trace)

    def hosts(self) -> Iterator[HostRecord]:
        """Every host in scope, by id."""
        if not self._reading:
            raise RuntimeError("FleetAsOf is read inside its with block")
        after, upto = self.id_range
        while True:
            page = self.store.report_host_page(
                self.at, after, self.page_size, self.scope.host_ids, upto
            )
            if not page:
                return
            after = page[-1][0]
            members = [(row, g) for row in page if (g := self._groups(row)) is not None]
            yield from self._records(members)
            if len(page) < self.page_size:  # the last page: no need to ask for another
                return

    def _groups(self, row: HostRow) -> tuple[str, ...] | None:
        """The host's groups, or None when the scope's group excludes it."""
        groups = host_groups(row[3], row[9], self._rules, self.at)
        return groups if self.scope.group is None or self.scope.group in groups else None

    def _records(self, members: list[tuple[HostRow, tuple[str, ...]]]) -> Iterator[HostRecord]:
        by_host: dict[int, list[StoredRow]] = {row[0]: [] for row, _ in members}
        checks, every, wanted = self.checks, self.evidence_for == "all", set()
        for result in self.store.report_results(self.at, list(by_host)):
            if result[1] in checks:
                by_host[result[0]].append(result)
                if every or result[2] in _FAILING:
                    wanted.add(result[4])
        evidence = self._page_evidence(wanted)
        for host, groups in members:
            results = by_host[host[0]]
            results.sort()
            yield self._record(host, groups, results, evidence)

    def _page_evidence(self, wanted: set[str]) -> dict[str, str]:
        """Canonical evidence text for every digest this page prints (read once each)."""
        missing = wanted - self._evidence.keys()
        if len(self._evidence) + len(missing) > _EVIDENCE_CACHE:
            self._evidence = {d: t for d, t in self._evidence.items() if d in wanted}
        found = self.store.evidence_texts(missing)
        if len(found) != len(missing):
            lost = sorted(missing - found.keys())[0]
            raise ValueError(f"evidence {lost} is referenced by a result but not stored")
        for digest, text in found.items():
            self._evidence[digest] = canonical_evidence(text)
        return self._evidence

    def _record(
        self,
        row: HostRow,
        groups: tuple[str, ...],
        results: list[StoredRow],
        evidence: Mapping[str, str],
    ) -> HostRecord:
        host_id, uuid, serial, hostname, platform, os_version, agent = row[:7]
        enrolled, interval, _, collected, received, evaluated = row[7:]
        last_collected = datetime.fromisoformat(collected) if collected else None
        return HostRecord(
            host_id, hostname, uuid, serial, platform, os_version, agent,
            instant_text(enrolled), groups,
            instant_text(received) if received else None,
            instant_text(collected) if collected else None,
            instant_text(evaluated) if evaluated else None,
            is_stale(last_collected, interval, self.at), last_collected, results, evidence,
        )  # fmt: skip

    def shown(
        self, host: HostRecord, check_id: str, status: str, reason: str
    ) -> tuple[str, str, Waiver | None, Waiver | None]:
        """A stored result as the report shows it: (status, reason, covering waiver,
        lapsed waiver), after the stale overlay (see ``_host_as_of``, the same rules)."""
        if host.stale and status != Status.NOTAPPLICABLE:
            reason = stale_reason(host.last_collected, Status(status))
            status = Status.UNKNOWN.value
        covering = self.waivers_by_check.get(check_id)
        if not covering:
            return status, reason, None, None
        waiver = applicable_waiver(covering, host.id, host.groups, check_id, self.at)
        lapsed = None
        if waiver is None:
            lapsed = lapsed_waiver(covering, host.id, host.groups, check_id, self.at)
        return status, reason, waiver, lapsed
