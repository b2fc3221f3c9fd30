"""Rate and concurrency limits: token buckets per host and for enrollment, and the registry
of open streams (one per host).

Plain Python with an injectable clock, no gRPC: the transport asks before it does any work
for a message (before conversion, storage or evaluation), and turns a refusal into
RESOURCE_EXHAUSTED with the wait this module computes. The point is fairness: the store has
one writer, so an agent sending far above its share would otherwise queue every other
agent's batches behind its own.

All of it is used from the event loop only (one thread), so nothing here locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "HostLimiter",
    "LimitConfig",
    "StreamRegistry",
    "StreamSlot",
    "TokenBucket",
]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up.

    ``take(n)`` spends n tokens and returns 0.0, or spends nothing and returns how many
    seconds until n tokens will be there (the retry hint). A request larger than the burst
    is allowed when the bucket is full, so one oversized batch is slow, never impossible.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def take(self, n: float = 1.0) -> float:
        tokens = self._refill()
        needed = min(n, self.burst)
        if tokens >= needed:
            self._tokens = tokens - n  # may go negative for an oversized request: it pays later
            return 0.0
        return (needed - tokens) / self.rate

    @property
    def full(self) -> bool:
        return self._refill() >= self.burst


@dataclass(frozen=True)
class LimitConfig:
    """The limits a collector enforces (``serve`` flags; defaults in the docstrings).

    Defaults let an agent empty a spool of 72 hours of 5-minute batches (864 batches) in
    under three minutes while no single agent can take more than a small share of the
    store's writer (GOALS.md measured a few hundred batches a second).
    """

    #: Batches a second per host, and how many may come back to back.
    host_batch_rate: float = 5.0
    host_batch_burst: float = 50.0
    #: Bytes a second per host (protobuf size), and the burst: four maximal messages.
    host_byte_rate: float = 1024 * 1024
    host_byte_burst: float = 16 * 1024 * 1024
    #: Enrollments a second, all agents together, and the burst.
    enroll_rate: float = 10.0
    enroll_burst: float = 20.0
    #: Connect streams open at once, all hosts together.
    max_streams: int = 20_000
    #: A host over its rate is paused (its stream not read) for a wait up to this many
    #: seconds; a longer wait ends the stream with RESOURCE_EXHAUSTED and a retry hint.
    pause_up_to: float = 1.0


class HostLimiter:
    """A batch bucket and a byte bucket per host; idle hosts' full buckets are forgotten
    (a full bucket is what a new one would be), so memory follows the active hosts."""

    def __init__(
        self, config: LimitConfig, clock: Callable[[], float] = time.monotonic, keep: int = 50_000
    ) -> None:
        self.config, self._clock, self._keep = config, clock, keep
        self._buckets: OrderedDict[int, tuple[TokenBucket, TokenBucket]] = OrderedDict()

    def _for(self, host_id: int) -> tuple[TokenBucket, TokenBucket]:
        buckets = self._buckets.get(host_id)
        if buckets is None:
            c = self.config
            buckets = (
                TokenBucket(c.host_batch_rate, c.host_batch_burst, self._clock),
                TokenBucket(c.host_byte_rate, c.host_byte_burst, self._clock),
            )
            self._buckets[host_id] = buckets
            self._forget_idle()
        self._buckets.move_to_end(host_id)
        return buckets

    def _forget_idle(self) -> None:
        while len(self._buckets) > self._keep:
            oldest, (batches, size) = next(iter(self._buckets.items()))
            if not (batches.full and size.full):
                break
            del self._buckets[oldest]

    def check(self, host_id: int, size: int) -> tuple[str, float] | None:
        """None if this batch of ``size`` bytes may go on, else (which limit, seconds)."""
        batches, volume = self._for(host_id)
        wait = batches.take(1)
        if wait:
            return "host_batches", wait
        wait = volume.take(size)
        if wait:
            batches.take(-1)  # refund: the batch was not accepted
            return "host_bytes", wait
        return None


@dataclass
class StreamSlot:
    """One open Connect stream; ``replaced`` is set when a newer stream of its host opens."""

    host_id: int
    replaced: bool = False
    _wakers: list[Callable[[], None]] = field(default_factory=list)

    def on_replaced(self, waker: Callable[[], None]) -> None:
        self._wakers.append(waker)

    def replace(self) -> None:
        self.replaced = True
        for waker in self._wakers:
            waker()


class StreamRegistry:
    """Open streams: at most ``max_streams`` in total and one per host.

    A second stream for a host **replaces** the first rather than being refused: an agent
    whose network dropped without a FIN (NAT timeout, sleep) reconnects while the collector
    still holds its dead stream, and refusing it would lock the host out until keepalive
    noticed, up to an hour. Two live agents sharing one identity (a clone with a copied
    credential) then keep replacing each other, which the replacement counter and the log
    make visible.
    """

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._open: dict[int, StreamSlot] = {}

    def __len__(self) -> int:
        return len(self._open)

    def open(self, host_id: int) -> tuple[StreamSlot | None, StreamSlot | None]:
        """(the new slot, the slot it replaced); (None, None) when the collector is full."""
        previous = self._open.get(host_id)
        if previous is None and len(self._open) >= self.max_streams:
            return None, None
        slot = StreamSlot(host_id)
        self._open[host_id] = slot
        if previous is not None:
            previous.replace()
        return slot, previous

    def close(self, slot: StreamSlot) -> None:
        if self._open.get(slot.host_id) is slot:
            del self._open[slot.host_id]
