"""Domain records the collector passes between transport, service and storage.

Plain frozen dataclasses: the transport converts protobuf messages into these at the edge,
and storage returns them, so neither protobuf nor SQLite types leak into the service.
Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from collector.policy.model import Status

__all__ = [
    "EnrollSecret",
    "FactBatch",
    "Host",
    "HostIdentity",
    "IngestOutcome",
    "StoredResult",
    "TableFacts",
    "TableState",
]


@dataclass(frozen=True)
class HostIdentity:
    """What an agent says about its machine when it enrolls."""

    hardware_uuid: str
    hardware_serial: str
    hostname: str
    platform: str
    os_version: str
    agent_version: str


@dataclass(frozen=True)
class Host:
    """An enrolled host as the collector knows it."""

    id: int
    identity: HostIdentity
    enrolled_at: datetime
    last_seen_at: datetime | None
    last_collected_at: datetime | None
    interval_seconds: int
    credential_revoked: bool
    last_seq: int


@dataclass(frozen=True)
class EnrollSecret:
    """An enroll secret's record; the secret itself is never stored, only its hash."""

    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    uses: int
    #: The group every host enrolled with this secret joins (None: no group).
    group: str | None = None


@dataclass(frozen=True)
class TableFacts:
    """One table as an agent collected it: every row, or the reason it could not."""

    name: str
    rows: Sequence[Mapping[str, str]]
    error: str = ""


@dataclass(frozen=True)
class FactBatch:
    """One collection's changes from one host; stored once per (host, seq)."""

    seq: int
    collected_at: datetime
    changed: Sequence[TableFacts]
    digests: Mapping[str, str]
    plan_version: str = ""
    full: bool = False


@dataclass(frozen=True)
class TableState:
    """What the collector holds for one of a host's tables."""

    name: str
    digest: str
    error: str
    collected_at: datetime


@dataclass(frozen=True)
class IngestOutcome:
    """What storing a batch did: the agent is acked either way; mismatches ask for a resend."""

    seq: int
    duplicate: bool
    changed_tables: frozenset[str] = frozenset()
    #: Tables whose digest in the batch disagrees with the collector's copy.
    mismatched_tables: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StoredResult:
    """The latest result of one check on one host (``changed_at``: when its status last
    changed)."""

    host_id: int
    check_id: str
    status: Status
    reason: str
    evidence: tuple[dict[str, str], ...]
    evaluated_at: datetime
    changed_at: datetime
