"""The collector's domain service: enrollment, ingest, evaluation and the views on them.

Transport (gRPC, CLI) calls these methods with domain records and turns the domain errors
below into status codes or exit codes; storage sits behind ``SqliteStore``. Nothing here
knows about gRPC or HTTP. Calls are synchronous and meant for one worker thread: SQLite has
one writer at a time, and queuing writes in one thread avoids lock contention entirely.

Ingest stores the batch (with its fact history and configuration drift, in the store's
transaction), then re-evaluates the checks whose tables changed and saves the results with
the compliance drift they cause (``collector.drift.compliance_drift``) in one more.
Administration (groups, waivers, baselines) is in ``collector.governance``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from collector.audit import AuditLog
from collector.drift import DriftEvent, compliance_drift
from collector.errors import (
    AlreadyEnrolledError,
    AuthenticationError,
    PendingApprovalError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
)
from collector.groups import GroupRule, host_groups
from collector.history import STALE_AFTER_INTERVALS, is_stale, stale_reason
from collector.identity import IdentityService, hash_secret
from collector.model import EnrollSecret, FactBatch, Host, HostIdentity, IngestOutcome, StoredResult
from collector.policy.evaluate import Evaluator
from collector.policy.model import Check, Pack, Status
from collector.policy.plan import CollectionPlan, collection_plan
from collector.scoring import FleetScore, HostScore, fleet_score, host_score
from collector.store import SqliteStore
from collector.store.results import PriorResult
from collector.tracked import plan_with_tracking
from collector.waivers import Waiver, applicable_waiver

__all__ = [
    "DEFAULT_SCORE_DROP_POINTS",
    "STALE_AFTER_INTERVALS",
    "AlreadyEnrolledError",
    "AuthenticationError",
    "Enrollment",
    "HostView",
    "PendingApprovalError",
    "PermissionDeniedError",
    "PostureService",
    "RateLimitedError",
    "ServiceError",
    "hash_secret",
]

#: A host score falling by more than this many points in one evaluation is drift.
DEFAULT_SCORE_DROP_POINTS = 10.0


@dataclass(frozen=True)
class Enrollment:
    host: Host
    credential: str
    plan: CollectionPlan
    #: With mTLS: the client certificate (PEM) and the CA that signed it.
    certificate_pem: bytes = b""
    ca_pem: bytes = b""


@dataclass(frozen=True)
class HostView:
    """A host with its score and results as an analyst should read them right now.

    ``waived`` names the failing checks an effective waiver covers (their results stay as
    they are; ``score.adjusted_percent`` counts them as compliant).
    """

    host: Host
    stale: bool
    score: HostScore
    results: tuple[StoredResult, ...]
    groups: tuple[str, ...] = ()
    waived: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Overlay:
    """What host views need beyond results: group rules, secret groups, waivers."""

    rules: tuple[GroupRule, ...]
    secret_groups: dict[int, str]
    waivers: tuple[Waiver, ...]


def utc_now() -> datetime:
    return datetime.now(UTC)


class PostureService:
    def __init__(
        self,
        store: SqliteStore,
        packs: Sequence[Pack],
        *,
        interval_seconds: int = 300,
        clock: Callable[[], datetime] = utc_now,
        score_drop_points: float = DEFAULT_SCORE_DROP_POINTS,
    ) -> None:
        self.store = store
        #: Who changed what: every admin action goes here (``collector.audit``).
        self.audit = AuditLog(store, lambda: self.clock())
        self.packs = tuple(packs)
        self.checks: dict[str, Check] = {c.id: c for pack in packs for c in pack.checks}
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.score_drop_points = score_drop_points
        #: Called after each stored batch (the webhook notifier's wake-up), if set.
        self.after_ingest: Callable[[], None] | None = None
        self.evaluator = Evaluator(store.fact_source(), list(self.checks.values()))
        self._plans: dict[str, CollectionPlan] = {}
        #: Enroll secrets, enrollment and its approval, certificates, revocation.
        self.identity = IdentityService(store, self.audit, lambda: self.clock(), interval_seconds)
        store.record_packs(self.packs, clock())

    def close(self) -> None:
        self.evaluator.close()

    # Enrollment and identity ----------------------------------------------------------

    def create_enroll_secret(self, name: str, group: str | None = None) -> tuple[EnrollSecret, str]:
        """A new secret (no expiry, no use limit), returned in clear exactly once; hosts
        that enroll with it join ``group``. ``identity.create_secret`` sets limits."""
        return self.identity.create_secret(name, group)

    def enroll(
        self,
        enroll_secret: str,
        identity: HostIdentity,
        *,
        csr_pem: bytes = b"",
        token: str = "",
        peer: str = "",
    ) -> Enrollment:
        """Enroll a new host (see ``collector.identity`` for re-enrollment and mTLS)."""
        admission = self.identity.enroll(
            enroll_secret, identity, csr_pem=csr_pem, token=token, peer=peer
        )
        certificate = admission.certificate
        return Enrollment(
            admission.host,
            admission.credential,
            self.plan_for(admission.host.identity.platform),
            certificate.pem if certificate else b"",
            self.identity.ca.ca_pem if certificate and self.identity.ca else b"",
        )

    def authenticate(self, credential: str) -> Host:
        return self.identity.authenticate(credential)

    def plan_for(self, platform: str) -> CollectionPlan:
        """What agents on ``platform`` collect: the packs' plan plus the tracked views'."""
        if platform not in self._plans:
            plan = collection_plan(self.packs, platform, self.interval_seconds)
            self._plans[platform] = plan_with_tracking(plan, platform)
        return self._plans[platform]

    # Ingest and evaluation ------------------------------------------------------------

    def ingest(self, host: Host, batch: FactBatch) -> IngestOutcome:
        """Store the batch (once), then re-evaluate only the checks whose tables changed."""
        outcome = self.store.apply_batch(host.id, batch, self.clock())
        self.evaluate_stored([(host, outcome)])
        return outcome

    def store_batches(
        self, batches: Sequence[tuple[Host, FactBatch]]
    ) -> list[IngestOutcome | Exception]:
        """Store several batches with one commit (group commit: the writer pays one fsync
        for all); each outcome, or the exception that batch raised, in order. Acknowledge
        them once this returns, then ``evaluate_stored`` them."""
        return self.store.apply_batches([(host.id, batch) for host, batch in batches], self.clock())

    def evaluate_stored(self, stored: Sequence[tuple[Host, IngestOutcome]]) -> None:
        """Re-evaluate what stored batches changed: each host once, for every table its
        batches changed. Results are derived from committed facts and recomputed when
        ``serve`` starts, so their commits skip the fsync (``deferred_sync``)."""
        tables: dict[int, tuple[Host, set[str]]] = {}
        for host, outcome in stored:
            if outcome.changed_tables:
                tables.setdefault(host.id, (host, set()))[1].update(outcome.changed_tables)
        with self.store.deferred_sync():
            for host, changed in tables.values():
                self.evaluate_host(host, changed)
        if self.after_ingest is not None and any(not outcome.duplicate for _, outcome in stored):
            self.after_ingest()

    def evaluate_host(self, host: Host, only_tables: Collection[str] | None = None) -> None:
        """Evaluate the host's checks (those reading ``only_tables``, if given) and save
        their results with the drift they cause. Only the evaluated checks' previous results
        are read, their evidence left encoded; every status is read only when one flips."""
        states = self.store.table_states(host.id)
        table_status = {name: (state.error or None) for name, state in states.items()}
        results = self.evaluator.evaluate(
            host.id, host.identity.platform, table_status, only_tables
        )
        now = self.clock()
        stored = [
            StoredResult(host.id, r.check_id, r.status, r.reason, r.evidence, now, now)
            for r in results
        ]
        previous = self.store.prior_results(host.id, [r.check_id for r in stored])
        events = self._compliance_drift(host.id, previous, stored)
        self.store.save_results(host.id, stored, now, previous=previous.values(), events=events)

    def _compliance_drift(
        self, host_id: int, previous: Mapping[str, PriorResult], current: Sequence[StoredResult]
    ) -> list[DriftEvent]:
        """Flips, and a score drop measured on the checks the host had results for before
        (a newly added check is not the host getting worse). ``previous`` holds the
        evaluated checks' results before; the score needs all of the host's statuses, read
        only when a check it counts flipped."""
        before = {c: r.status for c, r in previous.items() if c in self.checks}
        flips = [
            (r.check_id, before.get(r.check_id), r.status)
            for r in current
            if r.check_id not in before or before[r.check_id] != r.status
        ]
        if not any(check_id in before for check_id, _, _ in flips):
            return compliance_drift(flips, None, None, self.score_drop_points)  # same score
        every = {c: s for c, s in self.store.host_statuses(host_id).items() if c in self.checks}
        after = every | {r.check_id: r.status for r in current if r.check_id in every}
        return compliance_drift(
            flips,
            self._score(every).percent,
            self._score(after).percent,
            self.score_drop_points,
        )

    def evaluate_all(self) -> int:
        """Re-evaluate every host (on start: packs may have changed, or a crash cut a run)."""
        hosts = self.store.list_hosts()
        for host in hosts:
            self.evaluate_host(host)
        return len(hosts)

    # Views ----------------------------------------------------------------------------

    def is_stale(self, host: Host) -> bool:
        return is_stale(host.last_collected_at, host.interval_seconds, self.clock())

    def host_view(self, host: Host, overlay: _Overlay | None = None) -> HostView:
        overlay = overlay or self._overlay()
        results = tuple(r for r in self.store.results_for(host.id) if r.check_id in self.checks)
        stale = self.is_stale(host)
        if stale:
            results = tuple(self._as_stale(host, result) for result in results)
        now = self.clock()
        hostname = host.identity.hostname
        groups = host_groups(hostname, overlay.secret_groups.get(host.id), overlay.rules, now)
        waived = frozenset(
            r.check_id
            for r in results
            if r.status in (Status.FAIL, Status.ERROR)
            and applicable_waiver(overlay.waivers, host.id, groups, r.check_id, now)
        )
        score = host_score(
            (self.checks[r.check_id].severity, r.status, r.check_id in waived) for r in results
        )
        return HostView(host, stale, score, results, groups, waived)

    def _overlay(self) -> _Overlay:
        return _Overlay(
            tuple(self.store.group_rules()),
            self.store.host_secret_groups(),
            tuple(self.store.list_waivers()),
        )

    def _as_stale(self, host: Host, result: StoredResult) -> StoredResult:
        """Results of a stale host read as unknown: the facts behind them may be out of date."""
        if result.status is Status.NOTAPPLICABLE:
            return result
        reason = stale_reason(host.last_collected_at, result.status)
        return replace(result, status=Status.UNKNOWN, reason=reason)

    def _score(self, statuses: Mapping[str, Status]) -> HostScore:
        return host_score((self.checks[c].severity, status) for c, status in statuses.items())

    def host_views(self) -> list[HostView]:
        overlay = self._overlay()
        return [self.host_view(host, overlay) for host in self.store.list_hosts()]

    def fleet(self, views: Sequence[HostView] | None = None) -> FleetScore:
        views = self.host_views() if views is None else views
        return fleet_score(
            [
                (self.checks[r.check_id].severity, r.status, r.check_id in view.waived)
                for r in view.results
            ]
            for view in views
        )

    def find_host(self, reference: str) -> Host:
        hosts = self.store.find_hosts(reference)
        if not hosts:
            raise ServiceError(f"no host matches {reference!r}")
        if len(hosts) > 1:
            ids = ", ".join(str(host.id) for host in hosts)
            raise ServiceError(f"{reference!r} matches several hosts ({ids}); use the id")
        return hosts[0]

    def revoke_credential(self, host: Host, actor: str | None = None) -> None:
        """Refuse the host's agent from now on: its credential and client certificates
        (audited under ``actor``; None when the caller audits, as the web API does)."""
        self.identity.revoke_host(host, actor)
