"""The API's response and request bodies, as pydantic models (so OpenAPI describes them).

Instants are timezone-aware UTC and serialise as ISO 8601 (``2026-03-01T12:00:00Z``).
Converters from domain records live beside the models they fill.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from collector.access import ApiToken, Principal, User
from collector.drift import StoredEvent
from collector.model import EnrollSecret, Host, StoredResult
from collector.policy.model import Check
from collector.scoring import FleetScore, HostScore
from collector.waivers import Waiver

__all__ = [
    "CheckModel",
    "DriftEventModel",
    "FleetScoreModel",
    "HostModel",
    "HostScoreModel",
    "Page",
    "WaiverModel",
]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a longer list: ``next_offset`` is None on the last page."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next_offset: int | None


def page_of(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    more = offset + limit < total
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }


class HostScoreModel(BaseModel):
    """Raw and waiver-adjusted percent (0-100, null when no check was judged) and counts."""

    percent: float | None
    adjusted_percent: float | None
    coverage: float | None
    passed: int
    failed: int
    errors: int
    notapplicable: int
    unknown: int
    waived: int

    @classmethod
    def of(cls, score: HostScore) -> HostScoreModel:
        return cls(
            percent=score.percent,
            adjusted_percent=score.adjusted_percent,
            coverage=score.coverage,
            passed=score.passed,
            failed=score.failed,
            errors=score.errors,
            notapplicable=score.notapplicable,
            unknown=score.unknown,
            waived=score.waived,
        )


class FleetScoreModel(BaseModel):
    percent: float | None
    adjusted_percent: float | None
    hosts: int
    passed: int
    failed: int
    errors: int
    notapplicable: int
    unknown: int
    waived: int
    share_without_severe_failures: float | None = Field(
        description="share (0-1) of hosts with no failing high or critical check"
    )
    distribution: dict[str, int] = Field(description="scored hosts per score bucket")
    unscored: int

    @classmethod
    def of(cls, score: FleetScore) -> FleetScoreModel:
        return cls(
            percent=score.percent,
            adjusted_percent=score.adjusted_percent,
            hosts=score.hosts,
            passed=score.passed,
            failed=score.failed,
            errors=score.errors,
            notapplicable=score.notapplicable,
            unknown=score.unknown,
            waived=score.waived,
            share_without_severe_failures=score.share_without_severe_failures,
            distribution=dict(score.distribution),
            unscored=score.unscored,
        )


class HostModel(BaseModel):
    id: int
    hostname: str
    platform: str
    os_version: str
    agent_version: str
    hardware_uuid: str
    hardware_serial: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    last_collected_at: datetime | None
    interval_seconds: int
    credential_revoked: bool

    @classmethod
    def of(cls, host: Host) -> HostModel:
        identity = host.identity
        return cls(
            id=host.id,
            hostname=identity.hostname,
            platform=identity.platform,
            os_version=identity.os_version,
            agent_version=identity.agent_version,
            hardware_uuid=identity.hardware_uuid,
            hardware_serial=identity.hardware_serial,
            enrolled_at=host.enrolled_at,
            last_seen_at=host.last_seen_at,
            last_collected_at=host.last_collected_at,
            interval_seconds=host.interval_seconds,
            credential_revoked=host.credential_revoked,
        )


class HostSummaryModel(BaseModel):
    host: HostModel
    groups: list[str]
    stale: bool
    score: HostScoreModel
    failing: list[str] = Field(description="failing check ids, most severe first")


class ResultModel(BaseModel):
    check_id: str
    title: str
    severity: str
    status: str
    reason: str
    waived: bool
    evidence: list[dict[str, str]]
    evaluated_at: datetime
    changed_at: datetime

    @classmethod
    def of(cls, result: StoredResult, check: Check, waived: bool) -> ResultModel:
        return cls(
            check_id=result.check_id,
            title=check.title,
            severity=check.severity.value,
            status=result.status.value,
            reason=result.reason,
            waived=waived,
            evidence=[dict(row) for row in result.evidence],
            evaluated_at=result.evaluated_at,
            changed_at=result.changed_at,
        )


class HostDetailModel(BaseModel):
    host: HostModel
    groups: list[str]
    stale: bool
    score: HostScoreModel
    results: list[ResultModel]


class FactTableModel(BaseModel):
    table: str
    error: str
    collected_at: datetime
    rows: list[dict[str, str]]


class FactChangeModel(BaseModel):
    id: int
    view: str
    seq: int
    collected_at: datetime
    at: datetime
    change: str
    identity: Any
    old: Any
    new: Any


class DeviationModel(BaseModel):
    view: str
    type: str
    identity: Any
    baseline: Any
    current: Any
    changed_fields: list[str]


class BaselineApproval(BaseModel):
    host_id: int
    views: int
    approved_by: str


class CollectAccepted(BaseModel):
    host_id: int
    queued: bool
    stream_open: bool = Field(
        description="the agent has a stream open now and is told at once; otherwise it is"
        " told when it next connects"
    )


class FrameworkRefModel(BaseModel):
    control: str
    document: str


class CheckModel(BaseModel):
    id: str
    title: str
    description: str
    rationale: str
    remediation: str
    severity: str
    platforms: list[str]
    pack: str
    frameworks: dict[str, list[FrameworkRefModel]]

    @classmethod
    def of(cls, check: Check) -> CheckModel:
        return cls(
            id=check.id,
            title=check.title,
            description=check.description,
            rationale=check.rationale,
            remediation=check.remediation,
            severity=check.severity.value,
            platforms=sorted(check.platforms),
            pack=check.pack,
            frameworks={
                key: [FrameworkRefModel(control=r.control, document=r.document) for r in refs]
                for key, refs in sorted(check.frameworks.items())
            },
        )


class CheckSummaryModel(BaseModel):
    check: CheckModel
    counts: dict[str, int] = Field(description="hosts per status")
    waived: int


class GroupModel(BaseModel):
    name: str
    score: FleetScoreModel | None


class GroupRuleModel(BaseModel):
    id: int
    group: str
    hostname_glob: str
    created_at: datetime
    created_by: str
    deleted_at: datetime | None
    deleted_by: str | None


class GroupRuleCreate(BaseModel):
    group: str = Field(min_length=1, max_length=64)
    hostname_glob: str = Field(min_length=1, max_length=256)


class WorstCheckModel(BaseModel):
    check_id: str
    title: str
    severity: str
    failing: int


class FleetModel(BaseModel):
    at: datetime = Field(description="the instant the summary describes")
    score: FleetScoreModel
    groups: list[GroupModel]
    worst_checks: list[WorstCheckModel]
    stale_hosts: int


class TrendPointModel(BaseModel):
    at: datetime
    percent: float | None


class DriftEventModel(BaseModel):
    id: int
    host_id: int
    at: datetime
    kind: str
    type: str
    check_id: str | None
    view: str | None
    identity: Any
    old: Any
    new: Any
    changed_fields: list[str]
    detail: str

    @classmethod
    def of(cls, stored: StoredEvent) -> DriftEventModel:
        event = stored.event
        return cls(
            id=stored.id,
            host_id=stored.host_id,
            at=stored.at,
            kind=event.kind.value,
            type=event.type.value,
            check_id=event.check_id or None,
            view=event.view or None,
            identity=json.loads(event.identity),
            old=json.loads(event.old),
            new=json.loads(event.new),
            changed_fields=list(event.changed_fields),
            detail=event.detail,
        )


class DriftPage(BaseModel):
    """Newest first; pass ``next_before_id`` as ``before_id`` for the next page."""

    items: list[DriftEventModel]
    next_before_id: int | None


class WaiverModel(BaseModel):
    id: int
    check_id: str
    scope: str
    host_id: int | None
    group: str | None
    state: str
    justification: str
    ticket: str
    compensating_control: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    revoked_by: str | None
    revoked_at: datetime | None
    revoke_reason: str

    @classmethod
    def of(cls, waiver: Waiver, now: datetime) -> WaiverModel:
        return cls(
            id=waiver.id,
            check_id=waiver.check_id,
            scope=waiver.scope.value,
            host_id=waiver.host_id,
            group=waiver.group,
            state=waiver.state_at(now).value,
            justification=waiver.justification,
            ticket=waiver.ticket,
            compensating_control=waiver.compensating_control,
            requested_by=waiver.requested_by,
            requested_at=waiver.requested_at,
            expires_at=waiver.expires_at,
            approved_by=waiver.approved_by,
            approved_at=waiver.approved_at,
            revoked_by=waiver.revoked_by,
            revoked_at=waiver.revoked_at,
            revoke_reason=waiver.revoke_reason,
        )


class WaiverCreate(BaseModel):
    check_id: str = Field(min_length=1, max_length=200)
    scope: Literal["host", "group", "fleet"]
    target: str | None = Field(
        default=None, max_length=200, description="host id/hostname/uuid, or group name"
    )
    justification: str = Field(min_length=1, max_length=4000)
    ticket: str = Field(default="", max_length=200)
    compensating_control: str = Field(default="", max_length=4000)
    expires_at: datetime


class WaiverRevoke(BaseModel):
    reason: str = Field(default="", max_length=4000)


class ReportCreate(BaseModel):
    format: Literal["table", "json", "csv", "html", "pdf"] = "json"
    group: str | None = Field(default=None, max_length=64)
    host: str | None = Field(default=None, max_length=200)
    framework: Literal["cis", "cis_controls_v8", "nist_800_53r5", "cjis", "pci_dss_v4"] | None = (
        None
    )
    as_of: datetime | None = Field(default=None, description="default: now")


class IssuedReportModel(BaseModel):
    sha256: str
    content_sha256: str
    format: str
    generated_at: datetime
    as_of: datetime
    scope: dict[str, Any]
    generated_by: str


class VerifyModel(BaseModel):
    issued: bool
    sha256: str
    registrations: list[IssuedReportModel]


class EnrollSecretModel(BaseModel):
    id: int
    name: str
    group: str | None
    created_at: datetime
    revoked_at: datetime | None
    uses: int

    @classmethod
    def of(cls, secret: EnrollSecret) -> EnrollSecretModel:
        return cls(
            id=secret.id,
            name=secret.name,
            group=secret.group,
            created_at=secret.created_at,
            revoked_at=secret.revoked_at,
            uses=secret.uses,
        )


class EnrollSecretCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    group: str | None = Field(default=None, max_length=64)


class EnrollSecretCreated(BaseModel):
    """``secret`` is shown this once; only its hash is kept."""

    enroll_secret: EnrollSecretModel
    secret: str


class TokenModel(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenModel:
        return cls(
            id=token.id,
            name=token.name,
            role=token.role.value,
            created_at=token.created_at,
            created_by=token.created_by,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            revoked_by=token.revoked_by,
        )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "analyst", "auditor"]
    expires_at: datetime | None = None


class TokenCreated(BaseModel):
    """``token`` is shown this once; only its SHA-256 is kept."""

    api_token: TokenModel
    token: str


class UserModel(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    disabled_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserModel:
        return cls(
            id=user.id,
            name=user.name,
            role=user.role.value,
            created_at=user.created_at,
            created_by=user.created_by,
            disabled_at=user.disabled_at,
        )


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "analyst", "auditor"]
    password: str = Field(min_length=12, max_length=1024)


class RoleChange(BaseModel):
    role: Literal["admin", "analyst", "auditor"]


class PrincipalModel(BaseModel):
    name: str
    role: str
    kind: str
    actor: str
    permissions: list[str]

    @classmethod
    def of(cls, principal: Principal) -> PrincipalModel:
        from collector.access import ROLE_PERMISSIONS

        return cls(
            name=principal.name,
            role=principal.role.value,
            kind=principal.kind.value,
            actor=principal.actor,
            permissions=sorted(p.value for p in ROLE_PERMISSIONS[principal.role]),
        )


class SessionModel(BaseModel):
    principal: PrincipalModel
    expires_at: datetime | None
    csrf_token: str | None = Field(
        description="send as X-CSRF-Token with unsafe requests made with the session cookie"
    )


class LoginRequest(BaseModel):
    """A person's name and password, or an API token (to use the dashboard with it)."""

    name: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=1024)
    token: str | None = Field(default=None, max_length=200)


class AuditEntryModel(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str
