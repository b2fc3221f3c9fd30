"""A report split across processes: worker processes stream interleaved blocks of hosts.

One Python process uses one core (GOALS.md), and a fleet report's cost is per result row:
reading it, turning it into Python values, writing it. So the hosts are cut by id into
blocks of ``BLOCK_HOSTS`` (``id_blocks``), dealt to the workers in turn (block ``b`` to
worker ``b % workers``); each worker opens its own connection to the store and streams its
blocks exactly as a single-process report streams the fleet
(``collector.reports.stream.stream_hosts``). The hosts' canonical JSON, which only the
content digest needs (and the JSON format's file), goes to the report process through a
pipe, one block at a time; the report process takes the blocks in id order from whichever
worker holds the next, hashing them (and writing them, for JSON) while the workers go on.
A worker's sender thread holds up to ``_QUEUED_BLOCKS`` finished blocks, so a worker whose
block is not yet wanted keeps working. So the canonical JSON (2 GB for 50,000 hosts) is
never written to disk and read back, and its hashing is no longer a serial step after the
workers. The renderer's own text (CSV rows, HTML, table lines) goes to the worker's spool
files, with where each block lies in them (``Part.spans``); the report process copies the
blocks in id order into the file once the content digest is known. So the file is byte
for byte the one a single process writes.

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

import contextlib
import fcntl
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from collector.history import FleetAsOf, Given, Scope
from collector.policy.model import Check, Pack
from collector.reports import renderer_for
from collector.reports.stream import Accumulated, CanonicalSink, Part, Renderer, stream_hosts
from collector.store.engine import open_store

__all__ = [
    "BLOCK_HOSTS",
    "MAX_WORKERS",
    "MIN_HOSTS_PER_WORKER",
    "RendererArgs",
    "Slice",
    "WorkerFailedError",
    "default_workers",
    "id_blocks",
    "run_parts",
]

#: Below this many hosts per worker, starting a process costs more than it saves.
MIN_HOSTS_PER_WORKER = 2_000
#: The most workers a default report uses (each holds a connection and a page of hosts).
MAX_WORKERS = 8
#: Hosts per block (at most; a report's page size if smaller): about 10 MB of canonical
#: JSON for the benchmark's Linux hosts, so the blocks a worker holds back stay small; and
#: not much smaller, as each block costs its own queries (100 cost 5 % more than 500).
BLOCK_HOSTS = 250
#: Finished blocks a worker's sender holds: the report process takes one block from each
#: worker in turn, and they finish blocks at about the same pace, so a worker seldom has
#: more than one ready when its turn comes.
_QUEUED_BLOCKS = 2
#: What a worker's message is: a block (its hosts' canonical JSON objects, comma separated,
#: so it starts with ``{`` or is empty), its part (pickled), or the error that stopped it.
_BLOCK, _PART, _ERROR = b"{", b"P", b"E"
#: ``fcntl.F_SETPIPE_SZ`` (Python 3.10+ on Linux; spelled out for type checkers elsewhere).
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: How a failed split report ends: no file with ``--output`` (it is written aside and
#: renamed when complete), but a JSON report to stdout may have printed part of itself.
_NOT_ISSUED = "the report is incomplete and was not issued"


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
    """Everything a worker needs to stream its blocks of a report: the hosts
    ``after < id <= upto`` of each (``upto`` None: no bound), in order."""

    location: str
    checks: Mapping[str, Check]
    at: datetime
    scope: Scope
    evidence_for: str
    page_size: int
    given: Given
    framework: str | None
    renderer: RendererArgs
    blocks: tuple[tuple[int, int | None], ...]
    directory: Path
    index: int

    def hosts(self) -> str:
        """The worker's blocks, for messages: ``1..100, 201..300, ...``."""
        shown = [f"{a + 1}..{'' if b is None else b}" for a, b in self.blocks[:3]]
        return ", ".join(shown) + (", ..." if len(self.blocks) > 3 else "")


def default_workers(hosts: int) -> int:
    """Workers for a report of ``hosts`` hosts: one per usable core, at most
    ``MAX_WORKERS``, each with at least ``MIN_HOSTS_PER_WORKER`` hosts."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS, hosts // MIN_HOSTS_PER_WORKER))


def id_blocks(ids: Sequence[int], size: int) -> list[tuple[int, int | None]]:
    """``ids`` (sorted) cut into blocks (after, upto] of ``size`` hosts; the last is
    open-ended."""
    if not ids:
        return [(0, None)]
    lows = [0, *(ids[k - 1] for k in range(size, len(ids), size))]
    highs: list[int | None] = [*lows[1:], None]
    return list(zip(lows, highs, strict=True))


def _send(conn: Connection, outbox: queue.Queue[bytes | None]) -> None:
    """The worker's sender thread: blocks to the report process, in order. If the report
    process is gone, or sending fails in any way, so is the report: the worker exits at
    once (its main thread would otherwise wait on a full outbox for ever, and the report
    process sees the pipe close)."""
    try:
        while (message := outbox.get()) is not None:
            conn.send_bytes(message)
    except BaseException:
        os._exit(1)


class _Texts(list[str]):
    """A block's hosts' canonical JSON, as ``stream_hosts`` writes it."""

    def write(self, text: str) -> None:
        self.append(text)


def _stream_blocks(task: Slice, outbox: queue.Queue[bytes | None]) -> Part:
    """Stream the task's blocks: each block's canonical JSON into ``outbox``, its
    rendering into the spools (named files the report process reads)."""
    store = open_store(task.location, pool_size=2)
    renderer = task.renderer.make()
    try:
        paths = []
        for number, spool in enumerate(renderer.spools()):
            path = task.directory / f"part-{task.index}-spool-{number}"
            spool.reopen(path)
            paths.append(path)
        fleet = FleetAsOf(
            store, task.checks, task.at, task.scope, evidence_for=task.evidence_for,
            page_size=task.page_size, given=task.given,
        )  # fmt: skip
        seen = Accumulated(sorted(fleet.checks), task.framework)
        spans = []
        with fleet:
            for block in task.blocks:
                fleet.id_range = block
                starts = [spool.file.tell() for spool in renderer.spools()]
                texts = _Texts()
                seen.merge(stream_hosts(fleet, task.framework, renderer, texts))
                ends = [spool.file.tell() for spool in renderer.spools()]
                spans.append(tuple(zip(starts, ends, strict=True)))
                outbox.put("".join(texts).encode())
        for spool in renderer.spools():
            spool.file.flush()
        return Part(tuple(paths), tuple(spans), seen)
    finally:
        renderer.close()
        store.close()


def _widen(conn: Connection) -> None:
    """Let the pipe hold a megabyte (Linux; 64 KB by default): the sender thread writes a
    block in a few calls, each of which may wait for this process's busy main thread to
    give back the GIL."""
    # Not Linux, or above /proc/sys/fs/pipe-max-size: the default will do.
    with contextlib.suppress(OSError):
        fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, 1 << 20)


def _work(task: Slice, conn: Connection) -> None:
    """A worker process: its blocks, then its part (or what went wrong), through ``conn``."""
    _widen(conn)
    outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_BLOCKS)
    sender = threading.Thread(target=_send, args=(conn, outbox), daemon=True)
    sender.start()
    try:
        part = _stream_blocks(task, outbox)
        outbox.put(_PART + pickle.dumps(part))
    except BaseException as error:
        outbox.put(_ERROR + str(error).encode(errors="replace"))
    outbox.put(None)
    sender.join()
    conn.close()


def run_parts(tasks: Sequence[Slice], sink: CanonicalSink) -> list[Part]:
    """Run every slice in its own process (spawned: the caller may have threads, and a
    forked SQLite connection must not be used), write the hosts' canonical JSON into
    ``sink`` block by block in id order (comma separated), and return the parts in worker
    order. Any failure stops the others and raises ``WorkerFailedError``."""
    context = multiprocessing.get_context("spawn")
    links: list[tuple[BaseProcess, Connection]] = []
    try:
        for task in tasks:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_work, args=(task, sender), name=f"posture-report-{task.index}",
                daemon=True,
            )  # fmt: skip
            process.start()
            sender.close()
            links.append((process, receiver))
        separator = b""
        for number in range(sum(len(task.blocks) for task in tasks)):
            index = number % len(tasks)
            block = _receive(links[index][1], tasks[index], _BLOCK)
            if block:
                sink.write_bytes(separator)
                sink.write_bytes(block)
                separator = b","
        parts: list[Part] = [
            pickle.loads(_receive(conn, task, _PART))  # noqa: S301 (our own worker's part)
            for (_, conn), task in zip(links, tasks, strict=True)
        ]
    except BaseException:
        _stop(links)
        raise
    for worker, conn in links:  # each sent its part and is exiting
        worker.join()
        conn.close()
    return parts


def _stop(links: Sequence[tuple[BaseProcess, Connection]]) -> None:
    """Terminate every worker still running, so a failed report fails now rather than
    after the others' minutes of work."""
    for process, _ in links:
        if process.is_alive():
            process.terminate()
    for process, conn in links:
        process.join()
        conn.close()


def _receive(conn: Connection, task: Slice, kind: bytes) -> bytes | memoryview:
    """The next message of a worker, which must be of ``kind``."""
    name = f"report worker {task.index} (hosts {task.hosts()})"
    try:
        message = conn.recv_bytes()
    except (EOFError, OSError) as error:
        raise WorkerFailedError(f"{name} died before finishing; {_NOT_ISSUED}") from error
    tag = message[:1]
    if tag == _ERROR:
        text = message[1:].decode(errors="replace")
        raise WorkerFailedError(f"{name} failed: {text}; {_NOT_ISSUED}")
    if kind == _BLOCK and tag in (b"", b"{"):  # a block: its hosts' JSON objects, if any
        return message
    if tag != kind:
        raise WorkerFailedError(f"{name} sent {tag!r} where {kind!r} was due")
    return memoryview(message)[1:]
