"""Administration: groups, waivers and baselines, as the service's other half.

Each action checks its rules in the domain (``collector.waivers``, ``collector.groups``),
then records itself in the store with who did it and when, and in the audit log
(``collector.audit``) with its outcome, refusals included. Who is acting comes from the
caller: the CLI's ``--user``, or the web layer's authenticated principal.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from collector.groups import GroupRule, host_groups, valid_group_name
from collector.model import Host
from collector.service import PostureService, ServiceError
from collector.waivers import (
    Waiver,
    WaiverScope,
    approval_refusal,
    revocation_refusal,
)

__all__ = ["Governance", "WaiverRequest"]


@dataclass(frozen=True)
class WaiverRequest:
    """What a requester states; ``target`` is the host reference or group for those scopes."""

    check_id: str
    scope: WaiverScope
    target: str | None
    justification: str
    ticket: str
    compensating_control: str
    expires_at: datetime


class Governance:
    def __init__(self, service: PostureService) -> None:
        self.service = service
        self.store = service.store

    # Groups -----------------------------------------------------------------------------

    def memberships(self, hosts: Sequence[Host], at: datetime) -> dict[int, tuple[str, ...]]:
        rules = self.store.group_rules()
        secret_groups = self.store.host_secret_groups()
        return {
            host.id: host_groups(host.identity.hostname, secret_groups.get(host.id), rules, at)
            for host in hosts
        }

    def known_groups(self) -> set[str]:
        """Groups named by any enroll secret or rule, past or present."""
        named = {secret.group for secret in self.store.list_enroll_secrets() if secret.group}
        return named | {rule.group for rule in self.store.group_rules()}

    def require_group(self, group: str) -> str:
        if group not in self.known_groups():
            raise ServiceError(f"no group named {group!r} (no enroll secret or rule names it)")
        return group

    def hosts_in_group(self, group: str, at: datetime) -> list[Host]:
        self.require_group(group)
        hosts = self.store.hosts_enrolled_by(at)
        groups = self.memberships(hosts, at)
        return [host for host in hosts if group in groups[host.id]]

    def _audited(
        self, user: str, action: str, target: str, **detail: object
    ) -> AbstractContextManager[dict[str, object]]:
        return self.service.audit.recording(user, action, target, detail, refused=ServiceError)

    def add_group_rule(self, group: str, hostname_glob: str, user: str) -> GroupRule:
        with self._audited(user, "group_rule.add", f"group:{group}", hostname=hostname_glob) as d:
            if not valid_group_name(group):
                raise ServiceError(f"invalid group name {group!r}: letters, digits, ' -_.' only")
            if not hostname_glob.strip():
                raise ServiceError("a rule needs a hostname pattern")
            rule = self.store.add_group_rule(group, hostname_glob, user, self.service.clock())
            d["rule_id"] = rule.id
        return rule

    def delete_group_rule(self, rule_id: int, user: str) -> None:
        with self._audited(user, "group_rule.delete", f"group_rule:{rule_id}"):
            if not self.store.delete_group_rule(rule_id, user, self.service.clock()):
                raise ServiceError(f"no live group rule {rule_id}")

    # Waivers ----------------------------------------------------------------------------

    def request_waiver(self, request: WaiverRequest, user: str) -> Waiver:
        with self._audited(
            user, "waiver.request", f"check:{request.check_id}",
            scope=request.scope.value, scope_target=request.target, ticket=request.ticket,
            expires_at=request.expires_at.isoformat(),
        ) as detail:  # fmt: skip
            waiver = self._request_waiver(request, user)
            detail["waiver_id"] = waiver.id
        return waiver

    def _request_waiver(self, request: WaiverRequest, user: str) -> Waiver:
        now = self.service.clock()
        if request.check_id not in self.service.checks:
            raise ServiceError(f"no check {request.check_id!r} in the loaded packs")
        if not request.justification.strip():
            raise ServiceError("a waiver needs a justification")
        if request.expires_at <= now:
            raise ServiceError("a waiver must expire in the future")
        if not user:
            raise ServiceError("the requester must be named (--user)")
        host_id, group = self._waiver_target(request)
        waiver = Waiver(
            id=0,
            check_id=request.check_id,
            scope=request.scope,
            host_id=host_id,
            group=group,
            justification=request.justification.strip(),
            ticket=request.ticket.strip(),
            compensating_control=request.compensating_control.strip(),
            requested_by=user,
            requested_at=now,
            expires_at=request.expires_at,
        )
        return self.store.create_waiver(waiver)

    def _waiver_target(self, request: WaiverRequest) -> tuple[int | None, str | None]:
        if request.scope is WaiverScope.FLEET:
            if request.target:
                raise ServiceError("a fleet waiver names no host or group")
            return None, None
        if not request.target:
            raise ServiceError(
                f"a {request.scope.value} waiver must name its {request.scope.value}"
            )
        if request.scope is WaiverScope.HOST:
            return self.service.find_host(request.target).id, None
        return None, self.require_group(request.target)

    def get_waiver(self, waiver_id: int) -> Waiver:
        waiver = self.store.get_waiver(waiver_id)
        if waiver is None:
            raise ServiceError(f"no waiver {waiver_id}")
        return waiver

    def approve_waiver(self, waiver_id: int, user: str) -> Waiver:
        with self._audited(user, "waiver.approve", f"waiver:{waiver_id}"):
            return self._approve_waiver(waiver_id, user)

    def _approve_waiver(self, waiver_id: int, user: str) -> Waiver:
        waiver = self.get_waiver(waiver_id)
        refusal = approval_refusal(waiver, user, self.service.clock())
        if refusal is None and not self.store.approve_waiver(waiver_id, user, self.service.clock()):
            refusal = f"waiver {waiver_id} changed meanwhile; list it and try again"
        if refusal:
            raise ServiceError(refusal)
        return self.get_waiver(waiver_id)

    def revoke_waiver(self, waiver_id: int, user: str, reason: str) -> Waiver:
        with self._audited(user, "waiver.revoke", f"waiver:{waiver_id}", reason=reason):
            return self._revoke_waiver(waiver_id, user, reason)

    def _revoke_waiver(self, waiver_id: int, user: str, reason: str) -> Waiver:
        waiver = self.get_waiver(waiver_id)
        if not user:
            raise ServiceError("whoever revokes must be named (--user)")
        refusal = revocation_refusal(waiver, self.service.clock())
        if refusal is None and not self.store.revoke_waiver(
            waiver_id, user, reason, self.service.clock()
        ):
            refusal = f"waiver {waiver_id} changed meanwhile; list it and try again"
        if refusal:
            raise ServiceError(refusal)
        return self.get_waiver(waiver_id)

    # Baselines --------------------------------------------------------------------------

    def approve_baselines(self, hosts: Sequence[Host], user: str) -> dict[int, int]:
        """Make each host's current tracked state its baseline; host id -> views covered."""
        approved: dict[int, int] = {}
        for host in hosts:
            with self._audited(user, "baseline.approve", f"host:{host.id}") as detail:
                if not user:
                    raise ServiceError("whoever approves must be named (--user)")
                approved[host.id] = self.store.approve_baseline(host.id, user, self.service.clock())
                detail["views"] = approved[host.id]
        return approved
