"""Protobuf <-> domain conversion at the edge, with validation of what peers send.

A peer's message is untrusted: anything malformed raises ``InvalidMessage`` with a reason
the agent can log, and the servicer answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from datetime import UTC, datetime

from collector.model import DeliveryGap, FactBatch, HostIdentity, TableFacts
from collector.policy.plan import CollectionPlan
from protos.posture.v1 import agent_pb2 as pb

__all__ = ["InvalidMessage", "batch_from_proto", "identity_from_proto", "plan_to_proto"]

#: Collection times outside this window are refused: a wrong clock should not rewrite history.
_EARLIEST_MS = 1_500_000_000_000  # 2017-07-14
_MAX_FUTURE_MS = 24 * 3600 * 1000
_MAX_TEXT = 256
#: A spool id is the agent's random hex token; gap lists are merged runs, so short.
_MAX_SPOOL_ID = 64
_MAX_GAPS = 1024


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
    if len(batch.spool_id) > _MAX_SPOOL_ID or not batch.spool_id.isprintable():
        raise InvalidMessage(f"batch {batch.seq}: spool_id must be {_MAX_SPOOL_ID} printable chars")
    if len(batch.gaps) > _MAX_GAPS:
        raise InvalidMessage(f"batch {batch.seq} reports more than {_MAX_GAPS} gaps")
    return FactBatch(
        seq=batch.seq,
        collected_at=datetime.fromtimestamp(batch.collected_at_ms / 1000, UTC),
        changed=[TableFacts(table.name, _rows(table), table.error) for table in batch.changed],
        digests=dict(batch.digests),
        plan_version=batch.plan_version,
        full=batch.full,
        gaps=[_gap(batch.seq, gap, now_ms) for gap in batch.gaps],
        spool_id=batch.spool_id,
    )


def _rows(table: pb.Table) -> list[dict[str, str]]:
    """The table's rows as dicts. The hottest loop on the event loop (a changed table comes
    whole, ~300 rows for ``processes``): a comprehension over ``items()`` builds each dict
    about a quarter faster than ``dict(row.columns)``, which goes through the Mapping ABC's
    key view and a lookup per key (measured with upb, 12 columns)."""
    return [{key: value for key, value in row.columns.items()} for row in table.rows]


def _gap(seq: int, gap: pb.Gap, now_ms: int) -> DeliveryGap:
    """A gap must lie before its batch and count no more batches than its seq range holds
    (seq 0: collections never spooled, any count)."""
    if gap.first_seq == 0:
        plausible = gap.last_seq == 0 and gap.batches >= 1
    else:
        span = gap.last_seq - gap.first_seq + 1
        plausible = gap.first_seq <= gap.last_seq < seq and 1 <= gap.batches <= span
    times = (gap.first_collected_at_ms, gap.last_collected_at_ms)
    if not plausible or not _EARLIEST_MS <= times[0] <= times[1] <= now_ms + _MAX_FUTURE_MS:
        raise InvalidMessage(
            f"batch {seq}: gap {gap.first_seq}-{gap.last_seq} ({gap.batches} batches) is not"
            " plausible"
        )
    return DeliveryGap(
        gap.first_seq,
        gap.last_seq,
        gap.batches,
        datetime.fromtimestamp(times[0] / 1000, UTC),
        datetime.fromtimestamp(times[1] / 1000, UTC),
    )
