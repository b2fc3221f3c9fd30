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
    "DeliveryGap",
    "EnrollSecret",
    "FactBatch",
    "Host",
    "HostIdentity",
    "IngestOutcome",
    "SpoolEpoch",
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
class DeliveryGap:
    """Batches an agent's full spool dropped before delivering them (their tables' newest
    states still arrived, folded into a later batch). ``first_seq`` 0 counts collections
    the agent could not spool at all (its disk was full)."""

    first_seq: int
    last_seq: int
    batches: int
    first_collected_at: datetime
    last_collected_at: datetime


@dataclass(frozen=True)
class SpoolEpoch:
    """One agent spool's run of seqs for a host. Stored seqs are ``base_seq`` + the agent's
    seq, so a host's stored seqs keep increasing when a new spool starts again at 1."""

    spool_id: str
    base_seq: int
    started_at: datetime
    superseded_at: datetime | None


@dataclass(frozen=True)
class FactBatch:
    """One collection's changes from one host; stored once per (host, spool_id, seq).

    ``spool_id`` names the agent's spool: a new one (reinstalled agent, lost or corrupt
    spool) restarts the seqs, and the collector starts a new delivery epoch for the host.
    """

    seq: int
    collected_at: datetime
    changed: Sequence[TableFacts]
    digests: Mapping[str, str]
    plan_version: str = ""
    full: bool = False
    gaps: Sequence[DeliveryGap] = ()
    spool_id: str = ""


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
