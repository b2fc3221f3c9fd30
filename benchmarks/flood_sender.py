"""A flooding agent that is not a real agent: raw batches over the real gRPC stream.

A real agent cannot flood at 100x: it collects before it sends, and its probes take longer
than a hundredth of the normal interval. This sender enrolls like an agent and then writes
small, valid batches (one changed table with a correct digest, so the collector stores and
evaluates each) as fast as the rate asks, without waiting for acks, and reconnects at once
whenever the collector ends its stream (a rate limit, a replaced stream): the worst a
compromised laptop could do with a valid credential.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field

from agent.collect import TableResult, table_digest
from agent.spool import SpooledBatch
from agent.transport import Ack, AgentStream, TransportError, enroll, open_channel
from benchmarks.fleet import identity_of

__all__ = ["FloodCounts", "RawFlooder"]

AGENT_VERSION = "0.1.0-flood"


@dataclass
class FloodCounts:
    """Batches written and acknowledged, with their times (``time.time_ns``)."""

    sent: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)


def _batch(seq: int, version: str, spool_id: str) -> SpooledBatch:
    rows = [{"name": "flood", "version": str(seq), "platform": "debian"}]
    table = TableResult(rows=rows)
    return SpooledBatch(
        seq=seq,
        collected_at_ms=int(time.time() * 1000),
        changed={"os_version": table},
        digests={"os_version": table_digest(table)},
        plan_version=version,
        full=False,
        spool_id=spool_id,
    )


class RawFlooder:
    """Sends ``rate`` batches a second from its own thread and event loop until ``stop``."""

    def __init__(self, address: str, ca_cert: bytes, secret: str, rate: float) -> None:
        self.address, self.ca_cert, self.secret, self.rate = address, ca_cert, secret, rate
        self.counts = FloodCounts()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        async with open_channel(self.address, self.ca_cert, own_connection=True) as channel:
            _, credential, plan = await enroll(channel, self.secret, identity_of(990_000))
            seq, spool_id = 0, secrets.token_hex(16)
            while not self._stop.is_set():
                stream = AgentStream(channel, credential)
                try:
                    await stream.hello(AGENT_VERSION, plan.version, 0)
                    receiver = asyncio.create_task(self._receive(stream))
                    while not self._stop.is_set() and not receiver.done():
                        seq += 1
                        await stream.send(_batch(seq, plan.version, spool_id), 0)
                        self.counts.sent.append(time.time_ns())
                        await asyncio.sleep(1 / self.rate)
                    receiver.cancel()
                except TransportError as error:
                    self._refused(error)

    async def _receive(self, stream: AgentStream) -> None:
        try:
            while True:
                if isinstance(await stream.receive(), Ack):
                    self.counts.acked.append(time.time_ns())
        except TransportError as error:
            self._refused(error)

    def _refused(self, error: TransportError) -> None:
        name = error.code.name
        self.counts.refusals[name] = self.counts.refusals.get(name, 0) + 1
