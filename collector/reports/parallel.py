"""A report split across processes: each worker streams one range of host ids.

One Python process uses one core (GOALS.md), and a fleet report's cost is per result row:
reading it, turning it into Python values, writing it. So the hosts are cut by id into
ranges of equal size, one per worker process; each worker opens its own connection to
the store, streams its range exactly as a single-process report streams the fleet
(``collector.reports.stream.stream_hosts``) and leaves in a scratch directory its hosts'
canonical JSON, its renderer's spools and what its hosts add up to. The parent then joins
the parts in id order, hashing as it goes, so the file is byte for byte the one a single
process writes.

**Why separate snapshots agree.** Each worker reads in its own read transaction, begun a
little later than the parent's. Every row a report reads per host is bounded by the
report's instant: hosts enrolled at or before it, batches received, evaluations and result
transitions stamped at or before it, and the evidence those transitions name (immutable,
content-addressed). The instant is sealed before any worker starts (``StoreBase.seal``):
every write committed later is stamped after it, so a snapshot begun later holds the same
rows at or before the instant, on SQLite (WAL readers) and PostgreSQL (repeatable read)
alike. The host columns a report prints (identity, platform, versions, interval, enroll
secret's group) are never updated after enrollment. What is not stamped (group rules,
waivers, which can be deleted or revoked) is read once by the parent and handed to every
worker (``collector.history.Given``). Compaction is the one writer that deletes history:
the parent checks the history floor again once the workers are done.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from collector.history import FleetAsOf, Given, Scope
from collector.policy.model import Check, Pack
from collector.reports import renderer_for
from collector.reports.stream import Part, Renderer, stream_hosts
from collector.store.engine import open_store

__all__ = [
    "MAX_WORKERS",
    "MIN_HOSTS_PER_WORKER",
    "RendererArgs",
    "Slice",
    "WorkerFailedError",
    "default_workers",
    "id_ranges",
    "run_parts",
]

#: Below this many hosts per worker, starting a process costs more than it saves.
MIN_HOSTS_PER_WORKER = 2_000
#: The most workers a default report uses (each holds a connection and a page of hosts).
MAX_WORKERS = 8


class WorkerFailedError(RuntimeError):
    """A worker raised or died: the report is incomplete and must not be written."""


@dataclass(frozen=True)
class RendererArgs:
    """What ``renderer_for`` is called with, so each worker builds the parent's renderer
    (same format, checks, packs, instants and CSV digest placeholder)."""

    fmt: str
    checks: Mapping[str, Check]
    packs: Sequence[Pack]
    as_of: str
    generated_at: str
    one_host: bool
    token: str

    def make(self) -> Renderer:
        return renderer_for(
            self.fmt, self.checks, self.packs, self.as_of, self.generated_at,
            one_host=self.one_host, token=self.token,
        )  # fmt: skip


@dataclass(frozen=True)
class Slice:
    """Everything a worker needs to stream hosts ``after < id <= upto`` of a report."""

    location: str
    checks: Mapping[str, Check]
    at: datetime
    scope: Scope
    evidence_for: str
    page_size: int
    given: Given
    framework: str | None
    renderer: RendererArgs
    after: int
    upto: int | None
    directory: Path
    index: int


def default_workers(hosts: int) -> int:
    """Workers for a report of ``hosts`` hosts: one per usable core, at most
    ``MAX_WORKERS``, each with at least ``MIN_HOSTS_PER_WORKER`` hosts."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS, hosts // MIN_HOSTS_PER_WORKER))


def id_ranges(ids: Sequence[int], workers: int) -> list[tuple[int, int | None]]:
    """``ids`` (sorted) cut into ``workers`` ranges (after, upto] of about as many hosts
    each; the last is open-ended."""
    count = min(workers, len(ids))
    if count <= 1:
        return [(0, None)]
    cuts = [ids[k * len(ids) // count - 1] for k in range(1, count)]
    lows = [0, *cuts]
    highs: list[int | None] = [*cuts, None]
    return list(zip(lows, highs, strict=True))


def _stream_slice(task: Slice) -> Part:
    """A worker's job (run in a fresh process): stream its range into named files."""
    store = open_store(task.location, pool_size=2)
    renderer = task.renderer.make()
    try:
        spools = []
        for number, spool in enumerate(renderer.spools()):
            path = task.directory / f"part-{task.index}-spool-{number}"
            spool.reopen(path)
            spools.append(path)
        canonical = task.directory / f"part-{task.index}-canonical"
        fleet = FleetAsOf(
            store, task.checks, task.at, task.scope, evidence_for=task.evidence_for,
            page_size=task.page_size, id_range=(task.after, task.upto), given=task.given,
        )  # fmt: skip
        with canonical.open("w", encoding="utf-8", newline="") as sink, fleet:
            seen = stream_hosts(fleet, task.framework, renderer, sink)
        for spool in renderer.spools():
            spool.file.flush()
        return Part(canonical, tuple(spools), seen)
    finally:
        renderer.close()
        store.close()


def run_parts(tasks: Sequence[Slice]) -> list[Part]:
    """Run every slice in its own process (spawned: the caller may have threads, and a
    forked SQLite connection must not be used), and return the parts in order. Any
    failure stops the others and raises ``WorkerFailedError``."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(tasks), mp_context=context) as pool:
        futures = [pool.submit(_stream_slice, task) for task in tasks]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for future, task in zip(futures, tasks, strict=True):
                if future.done() and future.exception() is not None:
                    _result(future, task)  # the first failure raises, whichever worker
            return [_result(future, task) for future, task in zip(futures, tasks, strict=True)]
        except BaseException:
            _stop(pool)
            raise


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the slices not started and terminate the running workers, so a failed report
    fails now rather than after the others' minutes of work. The executor's process table
    is private, but it is the only handle on exactly this report's workers."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _result(future: Future[Part], task: Slice) -> Part:
    hosts = f"hosts {task.after + 1}..{'' if task.upto is None else task.upto}"
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise WorkerFailedError(
            f"report worker {task.index} ({hosts}) died before finishing; no report written"
        ) from error
    except Exception as error:
        raise WorkerFailedError(
            f"report worker {task.index} ({hosts}) failed: {error}; no report written"
        ) from error
