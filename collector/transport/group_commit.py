"""Group commit: batches from many streams stored with one commit, then acknowledged.

The store has one writer thread, and a delta report costs it a few milliseconds of work
plus the fsync of its commit, which on a busy disk costs more than the work. Batches that
arrive while the writer is busy wait here; as soon as it is free it takes all of them (up
to ``max_group``) and stores them in one transaction (``PostureService.store_batches``):
one fsync for the group. Each stream's ack waits for that commit, as every ack must (a
batch is acknowledged only once it is durable), and is sent as soon as it returns; the
writer then re-evaluates what the group changed (``PostureService.evaluate_stored``),
each host once. An idle collector stores a lone batch at once, as before: grouping only
happens when batches queue anyway, so it adds no wait.

Batches are stored in host id order, so collectors sharing PostgreSQL take the hosts' row
locks in one order and cannot deadlock; one host's batches keep their arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from collector.model import FactBatch, Host, IngestOutcome
from collector.service import PostureService

__all__ = ["GroupIngest"]

log = logging.getLogger("posture.collector")

#: The most batches one commit stores: bounds how long the first of them waits for its ack.
MAX_GROUP = 32


@dataclass(frozen=True)
class _Waiting:
    host: Host
    batch: FactBatch
    future: asyncio.Future[IngestOutcome]


def _settle(future: asyncio.Future[IngestOutcome], outcome: IngestOutcome | Exception) -> None:
    if future.done():  # the stream went away meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class GroupIngest:
    """Stores batches for the streams of one event loop, grouped (see the module doc).

    ``observe`` is called from the writer thread with each batch's share of the writer's
    time (storing and evaluating its group), for the ingest metric.
    """

    def __init__(
        self,
        service: PostureService,
        worker: ThreadPoolExecutor,
        observe: Callable[[float], None] | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.service = service
        self.worker = worker
        self.observe = observe
        self.max_group = max_group
        self._waiting: list[_Waiting] = []
        #: Hosts whose evaluation failed after their batches were stored: evaluated in full
        #: with the next group, since later deltas re-evaluate only the checks they touch.
        self._unevaluated: dict[int, Host] = {}
        self._drainer: asyncio.Task[None] | None = None

    async def ingest(self, host: Host, batch: FactBatch) -> IngestOutcome:
        """Store ``batch`` (once) and return its outcome when it is durable; raises what
        storing it raised (``StaleSpoolError``, a storage failure)."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(host, batch, loop.create_future())
        self._waiting.append(waiting)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await waiting.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            group = self._waiting[: self.max_group]
            del self._waiting[: self.max_group]
            try:
                await loop.run_in_executor(self.worker, self._write, group, loop)
            except Exception as error:  # the commit failed: none of the group is stored
                log.exception("could not store a group of %d batches", len(group))
                for waiting in group:
                    _settle(waiting.future, error)

    def _write(self, group: list[_Waiting], loop: asyncio.AbstractEventLoop) -> None:
        """In the writer thread: store the group, release its acks, then evaluate it."""
        started = time.perf_counter()
        ordered = sorted(group, key=lambda waiting: waiting.host.id)
        outcomes = self.service.store_batches([(w.host, w.batch) for w in ordered])
        for waiting, outcome in zip(ordered, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, waiting.future, outcome)
        stored = [
            (waiting.host, outcome)
            for waiting, outcome in zip(ordered, outcomes, strict=True)
            if isinstance(outcome, IngestOutcome)
        ]
        self._evaluate(stored)
        if self.observe is not None:
            share = (time.perf_counter() - started) / len(group)
            for _ in group:
                self.observe(share)

    def _evaluate(self, stored: list[tuple[Host, IngestOutcome]]) -> None:
        """In the writer thread: re-evaluate what the group changed, and in full any host
        an earlier failure left behind. Failures are logged and retried, never raised: the
        batches are stored and acknowledged already (``serve`` also re-evaluates at start)."""
        try:
            self.service.evaluate_stored(stored)
        except Exception:
            log.exception("could not evaluate %d stored batches", len(stored))
            self._unevaluated.update((host.id, host) for host, _ in stored)
            return
        for host_id, host in list(self._unevaluated.items()):
            try:
                self.service.evaluate_host(host)
            except Exception:
                log.exception("could not re-evaluate host %d", host_id)
                return
            del self._unevaluated[host_id]
