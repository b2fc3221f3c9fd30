"""Spool ids and gaps on the wire: conversion, validation, and a replaced spool's late batch
refused by a real grpc.aio server with TLS on 127.0.0.1."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from collector.model import DeliveryGap
from collector.transport.convert import InvalidMessage, batch_from_proto
from protos.posture.v1 import agent_pb2 as pb

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
IDENTITY = pb.HostIdentity(hardware_uuid="uuid-9", hostname="pc-9", platform="linux")


def _proto(seq: int, spool_id: str, *gaps: pb.Gap, at_ms: int = NOW_MS) -> pb.Batch:
    rows = [pb.Row(columns={"uid": str(seq), "username": f"u{seq}"})]
    return pb.Batch(
        seq=seq,
        collected_at_ms=at_ms,
        changed=[pb.Table(name="users", rows=rows)],
        digests={"users": f"d{seq}"},
        spool_id=spool_id,
        gaps=gaps,
    )


def test_conversion_carries_the_spool_id_and_gaps() -> None:
    gap = pb.Gap(
        first_seq=2, last_seq=4, batches=3, first_collected_at_ms=NOW_MS - 900_000,
        last_collected_at_ms=NOW_MS - 300_000,
    )  # fmt: skip
    never = pb.Gap(batches=2, first_collected_at_ms=NOW_MS, last_collected_at_ms=NOW_MS)
    batch = batch_from_proto(_proto(5, "abc", gap, never), NOW)
    assert batch.spool_id == "abc"
    assert list(batch.gaps) == [
        DeliveryGap(
            2,
            4,
            3,
            datetime(2026, 3, 2, 8, 45, tzinfo=UTC),
            datetime(2026, 3, 2, 8, 55, tzinfo=UTC),
        ),
        DeliveryGap(0, 0, 2, NOW, NOW),
    ]


@pytest.mark.parametrize(
    ("first", "last", "count"),
    [(3, 2, 1), (2, 5, 1), (2, 4, 4), (2, 4, 0), (0, 3, 1), (0, 0, 0)],
    ids=["reversed", "not-before-its-batch", "more-than-its-range", "none", "seq0-range", "empty"],
)
def test_implausible_gaps_are_refused(first: int, last: int, count: int) -> None:
    gap = pb.Gap(
        first_seq=first, last_seq=last, batches=count, first_collected_at_ms=NOW_MS,
        last_collected_at_ms=NOW_MS,
    )  # fmt: skip
    with pytest.raises(InvalidMessage, match="gap"):
        batch_from_proto(_proto(5, "abc", gap), NOW)


def test_gap_times_out_of_order_and_overlong_spool_ids_are_refused() -> None:
    gap = pb.Gap(
        first_seq=1, last_seq=1, batches=1, first_collected_at_ms=NOW_MS,
        last_collected_at_ms=NOW_MS - 1,
    )  # fmt: skip
    with pytest.raises(InvalidMessage, match="gap"):
        batch_from_proto(_proto(5, "abc", gap), NOW)
    with pytest.raises(InvalidMessage, match="spool_id"):
        batch_from_proto(_proto(5, "x" * 65), NOW)


async def _send(serving: Any, credential: str, batch: pb.Batch) -> pb.CollectorMessage:
    call = serving.stub.Connect(metadata=(("authorization", f"Bearer {credential}"),))
    await call.write(pb.AgentMessage(batch=batch))
    try:
        return await call.read()
    finally:
        call.cancel()


async def test_a_replaced_spools_late_batch_is_refused_not_acknowledged(
    serving: Any,
) -> None:
    response = await serving.stub.Enroll(
        pb.EnrollRequest(enroll_secret=serving.secret, identity=IDENTITY)
    )
    credential = response.agent_credential
    now_ms = int(time.time() * 1000)
    assert (await _send(serving, credential, _proto(1, "A", at_ms=now_ms))).ack.seq == 1
    assert (await _send(serving, credential, _proto(1, "B", at_ms=now_ms))).ack.seq == 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _send(serving, credential, _proto(2, "A", at_ms=now_ms))
    assert refused.value.code() != grpc.StatusCode.OK
    assert "replaced" in (refused.value.details() or "")
    # The host's current spool still delivers, and the late batch left no trace.
    assert (await _send(serving, credential, _proto(2, "B", at_ms=now_ms))).ack.seq == 2
    await serving.settled()
    store = serving.service.store
    assert store.delivered(int(response.host_id)) == [("A", 1), ("B", 1), ("B", 2)]
