"""Enrollment control as plain records and rules: secrets' limits, client certificates,
re-enrollment requests and the deny list.

Storage (``collector.store.identity``) returns these records; the rules that decide on them
live here so they read the same in the service, the CLI and the web API.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from collector.model import EnrollSecret, HostIdentity

__all__ = [
    "ClientCertificate",
    "DenyList",
    "EnrollSecretRecord",
    "EnrollmentRequest",
    "RequestState",
    "RevokedSets",
    "SecretState",
    "lifetime_ok",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> a positive timedelta; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 24h, 7d or 2w")
    return timedelta(seconds=float(match[1]) * _SECONDS[match[2]])


class SecretState(enum.Enum):
    LIVE = "live"
    EXPIRED = "expired"
    USED_UP = "used up"
    REVOKED = "revoked"


@dataclass(frozen=True)
class EnrollSecretRecord(EnrollSecret):
    """An enroll secret with its limits: an optional expiry and an optional use count."""

    expires_at: datetime | None = None
    max_uses: int | None = None

    def state_at(self, now: datetime) -> SecretState:
        """Revoked wins over expired, expired over used up: the most deliberate reason."""
        if self.revoked_at is not None:
            return SecretState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return SecretState.EXPIRED
        if self.max_uses is not None and self.uses >= self.max_uses:
            return SecretState.USED_UP
        return SecretState.LIVE

    def refusal(self, now: datetime) -> str | None:
        """Why an enrollment with this secret is refused now, for the agent's operator."""
        state = self.state_at(now)
        if state is SecretState.LIVE:
            return None
        detail = {
            SecretState.REVOKED: f"was revoked at {_iso(self.revoked_at)}",
            SecretState.EXPIRED: f"expired at {_iso(self.expires_at)}",
            SecretState.USED_UP: f"has been used {self.uses} of {self.max_uses} times",
        }[state]
        return f"enroll secret {self.name!r} {detail}; ask an administrator for a new one"


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "?"


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate the collector's CA issued to a host; known by its fingerprint
    (SHA-256 of the DER encoding, hex), which is the host's identity on an mTLS stream."""

    fingerprint: str
    host_id: int
    serial: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None = None
    revoke_reason: str = ""


class RequestState(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    COMPLETED = "completed"


@dataclass(frozen=True)
class EnrollmentRequest:
    """An agent asking to become a host that is enrolled already (a reinstall, a replaced
    disk, or a clone or rogue machine claiming its identity): only an administrator can tell
    them apart, so it waits. ``token_hash`` binds it to the one agent that filed it."""

    id: int
    host_id: int
    token_hash: str
    secret_id: int
    identity: HostIdentity
    peer: str
    requested_at: datetime
    last_attempt_at: datetime
    attempts: int
    state: RequestState
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class RevokedSets:
    """Revoked (unexpired) certificate fingerprints and hosts whose credential is revoked."""

    fingerprints: frozenset[str] = frozenset()
    host_ids: frozenset[int] = frozenset()

    def refusal(self, host_id: int, fingerprint: str | None) -> str | None:
        if host_id in self.host_ids:
            return f"agent credential of host {host_id} is revoked"
        if fingerprint is not None and fingerprint in self.fingerprints:
            return f"client certificate of host {host_id} is revoked"
        return None


@dataclass
class DenyList:
    """What open streams check on every message: replaced whole, never mutated, so readers
    on the event loop and the refresher in the worker thread need no lock.

    The server refreshes it from the database every few seconds (revocations come from CLI
    processes too); ``add_host`` makes a revocation inside this process count at once.
    """

    current: RevokedSets = field(default_factory=RevokedSets)

    def replace(self, sets: RevokedSets) -> None:
        self.current = sets

    def add_host(self, host_id: int) -> None:
        sets = self.current
        self.current = RevokedSets(sets.fingerprints, sets.host_ids | {host_id})

    def refusal(self, host_id: int, fingerprint: str | None) -> str | None:
        return self.current.refusal(host_id, fingerprint)


def lifetime_ok(lifetime: timedelta) -> timedelta:
    """Client certificates live between one minute and a year; ValueError otherwise."""
    if not timedelta(minutes=1) <= lifetime <= timedelta(days=366):
        raise ValueError("client certificate lifetime must be between 1 minute and 366 days")
    return lifetime
