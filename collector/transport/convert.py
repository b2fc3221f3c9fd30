"""Protobuf <-> domain conversion at the edge, with validation of what peers send.

A peer's message is untrusted: anything malformed raises ``InvalidMessage`` with a reason
the agent can log, and the servicer answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from datetime import UTC, datetime

from collector.model import FactBatch, HostIdentity, TableFacts
from collector.policy.plan import CollectionPlan
from protos.posture.v1 import agent_pb2 as pb

__all__ = ["InvalidMessage", "batch_from_proto", "identity_from_proto", "plan_to_proto"]

#: Collection times outside this window are refused: a wrong clock should not rewrite history.
_EARLIEST_MS = 1_500_000_000_000  # 2017-07-14
_MAX_FUTURE_MS = 24 * 3600 * 1000
_MAX_TEXT = 256


class InvalidMessage(ValueError):
    """A peer sent something the protocol does not allow."""


def identity_from_proto(identity: pb.HostIdentity) -> HostIdentity:
    fields = (
        identity.hardware_uuid,
        identity.hardware_serial,
        identity.hostname,
        identity.platform,
        identity.os_version,
        identity.agent_version,
    )
    if any(len(value) > _MAX_TEXT for value in fields):
        raise InvalidMessage(f"host identity fields are limited to {_MAX_TEXT} characters")
    return HostIdentity(*fields)


def plan_to_proto(plan: CollectionPlan) -> pb.CollectionPlan:
    return pb.CollectionPlan(
        version=plan.version,
        interval_seconds=plan.interval_seconds,
        tables=[
            pb.TableRequest(name=table.name, paths=table.paths, columns=table.columns)
            for table in plan.tables
        ],
    )


def batch_from_proto(batch: pb.Batch, now: datetime) -> FactBatch:
    if batch.seq < 1:
        raise InvalidMessage("batch seq must be 1 or more")
    now_ms = int(now.timestamp() * 1000)
    if not _EARLIEST_MS <= batch.collected_at_ms <= now_ms + _MAX_FUTURE_MS:
        raise InvalidMessage(
            f"batch {batch.seq}: collected_at_ms {batch.collected_at_ms} is not plausible"
        )
    names = [table.name for table in batch.changed]
    if len(set(names)) != len(names):
        raise InvalidMessage(f"batch {batch.seq} names a table twice")
    return FactBatch(
        seq=batch.seq,
        collected_at=datetime.fromtimestamp(batch.collected_at_ms / 1000, UTC),
        changed=[
            TableFacts(table.name, [dict(row.columns) for row in table.rows], table.error)
            for table in batch.changed
        ],
        digests=dict(batch.digests),
        plan_version=batch.plan_version,
        full=batch.full,
    )
