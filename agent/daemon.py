"""The agent's loop: collect on the plan's interval, spool, stream, reconnect.

Collection and streaming are independent: collections keep landing in the spool while the
collector is unreachable, and every (re)connection starts by resending whatever is still
unacknowledged, oldest first. Blocking work (probes, SQLite) runs in worker threads so the
stream keeps answering keepalives.

The daemon connects when the spool holds something to send and closes the connection once
all of it is acknowledged and no collection is under way, rather than holding a stream open
between collections. An idle open stream costs the collector about 85 KB (GOALS.md; see
docs/performance.md), so 50,000 permanently connected agents would need over 4 GB. A TLS
handshake every collection interval costs the collector about 1 ms of CPU, which is
cheaper. The collector's pushes (a new plan, a collection request) therefore reach an agent
when it opens its next stream, which is when it reports, and that is when they matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.collect import collect
from agent.guard import ProbeBackoff, ResourceGuard, RestartRequested
from agent.memory import freeze_startup_objects, release_memory, tune_allocator
from agent.plan import CollectionPlan
from agent.sources.base import FactSource
from agent.spool import Enrollment, Spool, SpoolFullError
from agent.transport import (
    Ack,
    AgentStream,
    CollectRequest,
    PlanUpdate,
    ResendRequest,
    TransportError,
    open_channel,
)

__all__ = ["AGENT_VERSION", "Agent", "DeliveryLog"]

log = logging.getLogger("posture.agent")

AGENT_VERSION = __version__

#: Batches written to the stream but not yet acknowledged, at most.
IN_FLIGHT = 32
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0
#: A collection request arriving this soon after a collection is already satisfied.
RECENT_SECONDS = 10.0


class DeliveryLog:
    """An append-only record of every batch written to the stream (``S <spool_id> <seq>
    <unix_ns>``) and every ack received (``A ...``), one line each, so an outside observer
    (the fault harness, ``benchmarks/faults.py``) can check that every acknowledged batch is
    stored, and measure ack latency. Each line is one ``write`` to an ``O_APPEND`` file: a
    kill -9 loses at most the line being written, never one the kernel already has."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._failed = False

    def record(self, kind: str, spool_id: str, seq: int) -> None:
        try:
            os.write(self._fd, f"{kind} {spool_id} {seq} {time.time_ns()}\n".encode())
        except OSError as error:  # a full disk must not stop delivery
            if not self._failed:
                log.warning("delivery log %s: %s", self.path, error)
            self._failed = True

    def close(self) -> None:
        os.close(self._fd)


class Agent:
    def __init__(
        self,
        spool: Spool,
        sources: Sequence[FactSource],
        plan: CollectionPlan,
        guard: ResourceGuard | None = None,
        *,
        collect_interval: float | None = None,
        delivery_log: DeliveryLog | None = None,
    ) -> None:
        self.spool = spool
        self.sources = sources
        self.plan = plan
        self.guard = guard
        #: Seconds between collections instead of the plan's (time-compressed test runs).
        self.collect_interval = collect_interval
        self.delivery_log = delivery_log
        self.backoff = ProbeBackoff()
        self._spooled = asyncio.Event()
        self._collect_now = asyncio.Event()
        self._last_collection = float("-inf")
        self._collecting = False

    # Collection -----------------------------------------------------------------------

    async def collect_once(self) -> int:
        """Collect the plan's tables and spool the changes; returns the new batch's seq, or 0
        when the disk had no room for it (the next batch reports the gap)."""
        started = time.monotonic()
        self._collecting = True
        try:
            collection = await asyncio.to_thread(collect, self.plan, self.sources, self.backoff)
            seq, changed = await asyncio.to_thread(
                self.spool.spool, collection, int(time.time() * 1000), self.plan.version
            )
        except SpoolFullError as error:
            log.error("collection not spooled: %s", error)
            return 0
        finally:
            self._collecting = False
        self._last_collection = time.monotonic()
        log.info(
            "collected %d tables in %.2fs: batch %d with %d changed",
            len(collection.tables),
            self._last_collection - started,
            seq,
            changed,
        )
        del collection  # the rows are in the spool now; give their memory back
        self._spooled.set()
        await asyncio.to_thread(release_memory)
        return seq

    async def _collect_forever(self) -> None:
        while True:
            await self.collect_once()
            interval = self.collect_interval or self.plan.interval_seconds
            delay = interval * random.uniform(0.9, 1.1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._collect_now.wait(), timeout=delay)
            self._collect_now.clear()

    # Streaming ------------------------------------------------------------------------

    def _handle(self, event: Ack | PlanUpdate | CollectRequest | ResendRequest) -> None:
        if isinstance(event, Ack):
            if self.delivery_log:
                self.delivery_log.record("A", self.spool.spool_id, event.seq)
            try:
                self.spool.acknowledge(event.seq)
            except sqlite3.OperationalError as error:  # full disk: it is resent, stored once
                log.warning("could not drop acknowledged batch %d: %s", event.seq, error)
        elif isinstance(event, PlanUpdate):
            log.info("collector sent plan %s", event.plan.version)
            self.plan = event.plan
            self.spool.put({"plan": json.dumps(event.plan.to_dict())})
            self._collect_now.set()
        elif isinstance(event, ResendRequest):
            log.info("collector asks for a full resend of %s: %s", event.tables, event.reason)
            self.spool.forget_sent(event.tables or None)
            self._collect_now.set()
        elif time.monotonic() - self._last_collection > RECENT_SECONDS:
            log.info("collector asks for a collection: %s", event.reason)
            self._collect_now.set()

    async def _send_pending(self, stream: AgentStream, window: asyncio.Semaphore) -> None:
        sent = 0
        while True:
            self._spooled.clear()
            batches = await asyncio.to_thread(self.spool.pending, sent)
            if batches:  # how many wait behind each batch, for the collector's operators
                behind = await asyncio.to_thread(self.spool.pending_count, batches[-1].seq)
            for position, batch in enumerate(batches):
                await window.acquire()
                await stream.send(batch, behind + len(batches) - 1 - position)
                if self.delivery_log:
                    self.delivery_log.record("S", batch.spool_id, batch.seq)
                sent = batch.seq
            if not batches:
                await self._spooled.wait()

    async def _receive(self, stream: AgentStream, window: asyncio.Semaphore, drain: bool) -> None:
        while True:
            event = await stream.receive()
            await asyncio.to_thread(self._handle, event)
            if isinstance(event, Ack):
                window.release()
            if drain and self._idle() and self.spool.pending_count() == 0:
                return

    def _idle(self) -> bool:
        return not (self._collect_now.is_set() or self._collecting)

    async def session(self, enrollment: Enrollment, *, drain: bool = False) -> None:
        """One connection: hello, resend the spool, then stream new batches.

        With ``drain`` it returns once nothing is left to send and collects when the
        collector asks (``posture-agent once``, where no collection loop runs).
        """
        await self._session(enrollment, drain=drain, collect_on_request=drain)

    async def _session(
        self,
        enrollment: Enrollment,
        *,
        drain: bool,
        collect_on_request: bool,
        collection_loop: asyncio.Task[None] | None = None,
    ) -> None:
        async with open_channel(enrollment.collector, Path(enrollment.ca_cert)) as channel:
            stream = AgentStream(channel, enrollment.credential)
            spooled = await asyncio.to_thread(self.spool.pending_count)
            await stream.hello(AGENT_VERSION, self.plan.version, spooled)
            window = asyncio.Semaphore(IN_FLIGHT)
            tasks = [
                asyncio.create_task(self._send_pending(stream, window)),
                asyncio.create_task(self._receive(stream, window, drain)),
            ]
            if collect_on_request:
                tasks.append(asyncio.create_task(self._collect_on_request()))
            # The daemon's collection loop is watched too: if it stops (a restart is due),
            # the session ends instead of waiting for a collection that will never come.
            watched = [*tasks, collection_loop] if collection_loop else tasks
            try:
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            except BaseException:
                await stream.close()
                raise
            finally:
                for task in tasks:
                    task.cancel()
            await stream.finish()

    async def _collect_on_request(self) -> None:
        while True:
            await self._collect_now.wait()
            self._collect_now.clear()
            await self.collect_once()

    async def run(self, enrollment: Enrollment) -> None:
        """The daemon: collect on the interval; connect when the spool holds batches, close
        once they are acknowledged (see the module docstring), back off when refused."""
        tune_allocator()  # before the collection and gRPC threads make heaps of their own
        freeze_startup_objects()
        collector = asyncio.create_task(self._collect_forever())
        backoff = BACKOFF_FIRST
        try:
            while True:
                await self._until_pending(collector)
                try:
                    await self._session(
                        enrollment, drain=True, collect_on_request=False, collection_loop=collector
                    )
                except TransportError as error:
                    level = logging.WARNING if error.retryable else logging.ERROR
                    log.log(level, "collector %s: %s", enrollment.collector, error)
                    if not error.retryable:
                        backoff = BACKOFF_MAX
                    # Jittered backoff, but never sooner than a rate limit asked for.
                    delay = max(random.uniform(0, backoff), error.retry_after or 0.0)
                    pending = self.spool.pending_count()
                    log.info("reconnecting in %.1fs (%d batches spooled)", delay, pending)
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    backoff = BACKOFF_FIRST
                # After a session, so a restart comes after delivery (the spool would keep
                # anything unacknowledged across it anyway).
                if self.guard and (reason := self.guard.over_limit()):
                    raise RestartRequested(reason)
        finally:
            collector.cancel()

    async def _until_pending(self, collector: asyncio.Task[None]) -> None:
        """Wait until the spool holds a batch; a collection loop that died raises here."""
        while True:
            self._spooled.clear()  # before counting, so a batch spooled meanwhile wakes us
            if await asyncio.to_thread(self.spool.pending_count) > 0:
                return
            spooled = asyncio.create_task(self._spooled.wait())
            await asyncio.wait({spooled, collector}, return_when=asyncio.FIRST_COMPLETED)
            spooled.cancel()
            if collector.done():
                collector.result()
                raise RuntimeError("the collection loop stopped")
