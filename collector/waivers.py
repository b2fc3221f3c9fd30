"""Waivers: documented, approved, expiring exceptions to a check (NIST SP 800-53 CM-6(c)).

A waiver names one check and a scope (one host, one group, or the whole fleet), why the
deviation is accepted, the ticket and compensating control behind it, who asked and when it
ends. It takes effect only once someone other than its requester approves it, and stops by
itself at its expiry; revoking ends it early. A waiver never changes a result: it is an
overlay that reports show beside the real status (``waived``), and the waiver-adjusted score
counts a waived failure as compliant while the raw score does not.

Every field is set once (request, approval, revocation), so a waiver's state at any past
instant follows from its timestamps, and reports as of a date show the waivers as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Waiver",
    "WaiverScope",
    "WaiverState",
    "applicable_waiver",
    "approval_refusal",
    "lapsed_waiver",
    "revocation_refusal",
]


class WaiverScope(StrEnum):
    HOST = "host"
    GROUP = "group"
    FLEET = "fleet"


class WaiverState(StrEnum):
    REQUESTED = "requested"
    EFFECTIVE = "effective"
    EXPIRED = "expired"
    REVOKED = "revoked"


#: When several waivers cover a result, the narrowest one is shown.
_SPECIFICITY = {WaiverScope.HOST: 0, WaiverScope.GROUP: 1, WaiverScope.FLEET: 2}


@dataclass(frozen=True)
class Waiver:
    """One waiver record; ``host_id`` is set for host scope, ``group`` for group scope."""

    id: int
    check_id: str
    scope: WaiverScope
    host_id: int | None
    group: str | None
    justification: str
    ticket: str
    compensating_control: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    approved_by: str | None = None
    approved_at: datetime | None = None
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoke_reason: str = ""

    def state_at(self, at: datetime) -> WaiverState:
        """The waiver's state at instant ``at``, from its timestamps alone."""
        if self.revoked_at is not None and self.revoked_at <= at:
            return WaiverState.REVOKED
        if self.expires_at <= at:
            return WaiverState.EXPIRED
        if self.approved_at is not None and self.approved_at <= at:
            return WaiverState.EFFECTIVE
        return WaiverState.REQUESTED

    def covers(self, host_id: int, groups: Iterable[str], check_id: str) -> bool:
        if check_id != self.check_id:
            return False
        if self.scope is WaiverScope.HOST:
            return host_id == self.host_id
        if self.scope is WaiverScope.GROUP:
            return self.group in set(groups)
        return True

    @property
    def scope_label(self) -> str:
        if self.scope is WaiverScope.HOST:
            return f"host {self.host_id}"
        if self.scope is WaiverScope.GROUP:
            return f"group {self.group}"
        return "fleet"


def approval_refusal(waiver: Waiver, approver: str, now: datetime) -> str | None:
    """Why ``approver`` may not approve ``waiver`` now, or None when they may."""
    if not approver:
        return "the approver must be named"
    if approver == waiver.requested_by:
        return f"waiver {waiver.id} was requested by {approver}; another person must approve it"
    if waiver.approved_at is not None:
        return f"waiver {waiver.id} is already approved (by {waiver.approved_by})"
    state = waiver.state_at(now)
    if state is not WaiverState.REQUESTED:
        return f"waiver {waiver.id} is {state.value}; request a new one"
    return None


def revocation_refusal(waiver: Waiver, now: datetime) -> str | None:
    """Why ``waiver`` cannot be revoked now, or None when it can."""
    state = waiver.state_at(now)
    if state in (WaiverState.REVOKED, WaiverState.EXPIRED):
        return f"waiver {waiver.id} is already {state.value}"
    return None


def _narrowest(waivers: Iterable[Waiver]) -> Waiver | None:
    ordered = sorted(waivers, key=lambda w: (_SPECIFICITY[w.scope], w.id))
    return ordered[0] if ordered else None


def applicable_waiver(
    waivers: Sequence[Waiver], host_id: int, groups: Sequence[str], check_id: str, at: datetime
) -> Waiver | None:
    """The effective waiver covering this host's check at ``at`` (the narrowest scope wins)."""
    return _narrowest(
        w
        for w in waivers
        if w.covers(host_id, groups, check_id) and w.state_at(at) is WaiverState.EFFECTIVE
    )


def lapsed_waiver(
    waivers: Sequence[Waiver], host_id: int, groups: Sequence[str], check_id: str, at: datetime
) -> Waiver | None:
    """An approved waiver that covered this check and expired by ``at``, so a report can
    say the result counts again because its waiver ran out."""
    return _narrowest(
        w
        for w in waivers
        if w.covers(host_id, groups, check_id)
        and w.approved_at is not None
        and w.state_at(at) is WaiverState.EXPIRED
    )
