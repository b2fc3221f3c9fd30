"""Delivery as people read it: the batches a host's agent could not deliver, in words.

An agent whose collector is unreachable for longer than its spool holds drops intermediate
states (never the newest state of a table) and says so in a gap record; an agent whose spool
is replaced starts its seqs again. Both are facts an analyst must see beside a host's
results ("were these checks really passing all week?"), so this module turns the stored
records into the lines ``posture-collector host`` prints and the objects its JSON carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from collector.model import DeliveryGap, Host, SpoolEpoch

__all__ = [
    "DeliveryRecords",
    "StaleSpoolError",
    "describe_gaps",
    "gaps_as_json",
    "host_delivery_json",
    "host_delivery_lines",
]


class DeliveryRecords(Protocol):
    """What the store offers (``collector.store.delivery.DeliveryMixin``)."""

    def delivery_gaps(self, host_id: int) -> list[DeliveryGap]: ...

    def spool_epochs(self, host_id: int) -> list[SpoolEpoch]: ...


class StaleSpoolError(Exception):
    """A batch from a spool the host has since replaced: refused, never stored.

    Storing it would put an older state over a newer one; acknowledging it without storing
    would break "acknowledged means stored". The sender is a restored backup or a cloned
    machine sharing the credential, which an operator should hear about: the transport
    answers FAILED_PRECONDITION with this message.
    """

    def __init__(self, host_id: int, spool_id: str, seq: int, current: SpoolEpoch) -> None:
        since = _when(current.started_at)
        super().__init__(
            f"host {host_id}: batch {seq} comes from spool {spool_id[:12] or '(none)'}, which"
            f" spool {current.spool_id[:12]} replaced at {since}; it is not stored (is this a"
            " restored backup or a cloned machine?)"
        )


def _when(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_gaps(
    host: str, gaps: Sequence[DeliveryGap], epochs: Sequence[SpoolEpoch] = ()
) -> list[str]:
    """One line per gap and per spool replacement, oldest first, e.g.
    ``host pc-17: 12 batches dropped between 2024-05-01 10:00:00 UTC and ...``."""
    events: list[tuple[datetime, str]] = []
    for gap in gaps:
        first, last = _when(gap.first_collected_at), _when(gap.last_collected_at)
        if gap.first_seq == 0:
            what = f"{gap.batches} collection{_s(gap.batches)} not spooled (agent disk full)"
        else:
            what = f"{gap.batches} batch{_es(gap.batches)} dropped (agent spool full)"
        span = f"at {first}" if first == last else f"between {first} and {last}"
        events.append((gap.first_collected_at, f"host {host}: {what} {span}"))
    for epoch in (epoch for epoch in epochs if epoch.base_seq > 0):  # 0: the first spool
        line = (
            f"host {host}: agent spool replaced at {_when(epoch.started_at)}; seqs restarted"
            " (agent reinstalled, spool lost or found corrupt)"
        )
        events.append((epoch.started_at, line))
    return [line for _, line in sorted(events, key=lambda event: event[0])]


def host_delivery_lines(records: DeliveryRecords, host: Host) -> list[str]:
    """``describe_gaps`` for one stored host: what ``posture-collector host`` prints."""
    gaps, epochs = records.delivery_gaps(host.id), records.spool_epochs(host.id)
    return describe_gaps(host.identity.hostname, gaps, epochs)


def host_delivery_json(records: DeliveryRecords, host: Host) -> dict[str, object]:
    """The host's delivery record for its JSON view: gaps, and when its spool was replaced."""
    epochs = records.spool_epochs(host.id)
    return {
        "delivery_gaps": gaps_as_json(records.delivery_gaps(host.id)),
        "spool_replaced_at": [e.started_at.isoformat() for e in epochs if e.base_seq > 0],
    }


def gaps_as_json(gaps: Sequence[DeliveryGap]) -> list[dict[str, object]]:
    """The gaps as the JSON host view and report carry them."""
    return [
        {
            "first_seq": gap.first_seq,
            "last_seq": gap.last_seq,
            "batches": gap.batches,
            "first_collected_at": gap.first_collected_at.isoformat(),
            "last_collected_at": gap.last_collected_at.isoformat(),
            "kind": "not_spooled" if gap.first_seq == 0 else "dropped",
        }
        for gap in gaps
    ]


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _es(count: int) -> str:
    return "" if count == 1 else "es"
