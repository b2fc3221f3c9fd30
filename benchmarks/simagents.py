"""Simulated agents: many per process, each a real gRPC client over its own TLS connection.

A worker process runs one asyncio loop for a share of the fleet. Each simulated agent uses
the agent's own transport code (``agent.transport``: channel, stream, batch encoding) and
behaves like ``posture-agent run``: on its cadence (with the daemon's +-10 % jitter) it
opens a connection, says hello, sends the tables that changed with every digest, waits for
the ack, and closes; or, in ``persistent`` mode, it keeps one stream open throughout, as the
daemon did before closing idle streams, so the two designs can be compared.

Like a daemon, each simulated agent keeps its own TLS session cache (``TlsSessions``), so its
reconnects resume its own session; before the first phase each agent connects once to get
a session (as a daemon in steady state has one), unless ``resume`` is off. The collector
is addressed by IP, where gRPC sends no server name and never resumes, so channels name the
server ``localhost`` (in the local PKI's certificate) explicitly.

A sampled agent also flips a check now and then (``fleet.FLIP_CHECK``); a thread polls the
collector's database until the flipped result is visible, which measures report -> score.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from agent.collect import TableResult
from agent.spool import SpooledBatch
from agent.transport import Ack, AgentStream, TlsSessions, TransportError, enroll, open_channel
from benchmarks.common import raise_file_limit
from benchmarks.fleet import FLIP_CHECK, ChangeRates, FleetBase, SimulatedHost

__all__ = [
    "Enrolled",
    "FirstReports",
    "SteadyResult",
    "SteadySpec",
    "enroll_and_report",
    "run_steady",
]

AGENT_VERSION = "0.1.0-loadgen"
#: The name the local PKI's server certificate holds; sessions are kept under it.
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class Enrolled:
    index: int
    host_id: int
    credential: str


@dataclass(frozen=True)
class FirstReports:
    """Enrollment and each agent's first, full report."""

    enrolled: list[Enrolled]
    plan_version: str
    report_seconds: list[float]
    wire_bytes: int
    errors: dict[str, int]


@dataclass(frozen=True)
class SteadySpec:
    """Steady load in phases, one per cadence, each ``duration`` long and ``gap`` apart (so
    the last acks of a phase land before the next begins)."""

    address: str
    ca_cert: bytes
    db_path: Path
    base: dict[str, TableResult]
    agents: list[Enrolled]
    plan_version: str
    cadences: tuple[float, ...]
    duration: float
    start_at: float  # wall clock (time.time()) of the first phase, the same for every worker
    gap: float = 3.0
    persistent: bool = False
    #: Resume TLS sessions, each agent its own (a daemon's ``SESSIONS``).
    resume: bool = True
    #: One agent in ``flip_sample`` flips its check every ``flip_every`` reports.
    flip_sample: int = 10
    flip_every: int = 3
    rates: ChangeRates = field(default_factory=ChangeRates)

    def phase_start(self, phase: int) -> float:
        return self.start_at + phase * (self.duration + self.gap)


@dataclass
class SteadyResult:
    reports: int = 0
    ack_seconds: list[float] = field(default_factory=list)
    report_seconds: list[float] = field(default_factory=list)
    score_seconds: list[float] = field(default_factory=list)
    flips_unseen: int = 0
    wire_bytes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _until_ack(stream: AgentStream, seq: int) -> None:
    while True:
        event = await stream.receive()
        if isinstance(event, Ack) and event.seq == seq:
            return


def _batch(host: SimulatedHost, seq: int, tables: set[str], version: str) -> SpooledBatch:
    return SpooledBatch(
        seq=seq,
        collected_at_ms=int(time.time() * 1000),
        changed={name: host.table(name) for name in sorted(tables)},
        digests=host.digests(),
        plan_version=version,
        full=tables == set(host.base.tables),
    )


# Enrollment and first reports ---------------------------------------------------------


def enroll_and_report(
    address: str,
    ca_cert: bytes,
    secret: str,
    base: dict[str, TableResult],
    indices: list[int],
    concurrency: int,
    first_report: bool = True,
) -> FirstReports:
    """Enroll these agents and send each one's first full report (run in a worker); without
    ``first_report`` only enroll (to measure connections, not ingest)."""
    return asyncio.run(
        _enroll_and_report(address, ca_cert, secret, base, indices, concurrency, first_report)
    )


async def _enroll_and_report(
    address: str,
    ca_cert: bytes,
    secret: str,
    base: dict[str, TableResult],
    indices: list[int],
    concurrency: int,
    first_report: bool,
) -> FirstReports:
    raise_file_limit()
    fleet = FleetBase.from_tables(base)
    gate = asyncio.Semaphore(concurrency)
    errors: Counter[str] = Counter()
    seconds: list[float] = []
    enrolled: list[Enrolled] = []
    versions: set[str] = set()
    sizes: list[int] = []

    async def one(index: int) -> None:
        host = SimulatedHost.derived(index, fleet)
        async with gate:
            try:
                # First contact: a full handshake, as a newly installed agent makes.
                channel = open_channel(address, ca_cert, own_connection=True, sessions=None)
                async with channel:
                    host_id, credential, plan = await enroll(channel, secret, host.identity())
                    versions.add(plan.version)
                    if first_report:
                        seconds.append(
                            await _first_report(channel, host, credential, plan.version, sizes)
                        )
                enrolled.append(Enrolled(index, int(host_id), credential))
            except TransportError as error:
                errors[error.code.name] += 1

    await asyncio.gather(*(one(index) for index in indices))
    return FirstReports(enrolled, min(versions, default=""), seconds, sum(sizes), dict(errors))


async def _first_report(
    channel: grpc.aio.Channel,
    host: SimulatedHost,
    credential: str,
    version: str,
    sizes: list[int],
) -> float:
    """Send the host's full first report; returns seconds from hello to ack."""
    started = time.perf_counter()
    stream = AgentStream(channel, credential)
    await stream.hello(AGENT_VERSION, version, 1)
    sizes.append(await stream.send(_batch(host, 1, set(host.base.tables), version), 0))
    await _until_ack(stream, 1)
    elapsed = time.perf_counter() - started
    await stream.finish()
    return elapsed


# Steady state -------------------------------------------------------------------------


class _ScoreWatcher:
    """Polls the collector's database until each flipped check shows its new status."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._pending: list[tuple[int, float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.seconds: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def expect(self, host_id: int, sent_at: float, status: str) -> None:
        with self._lock:
            self._pending.append((host_id, sent_at, status))

    def _run(self) -> None:
        uri = f"{self._db_path.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            while not self._stop.wait(0.005):
                with self._lock:
                    pending = list(self._pending)
                for item in pending:
                    host_id, sent_at, status = item
                    row = conn.execute(
                        "SELECT status FROM results WHERE host_id = ? AND check_id = ?",
                        (host_id, FLIP_CHECK),
                    ).fetchone()
                    if row and row[0] == status:
                        seen = time.perf_counter()
                        with self._lock:
                            self._pending.remove(item)
                        self.seconds.append(seen - sent_at)

    def stop(self, grace: float) -> int:
        """Stop after ``grace`` seconds for the last flips; returns how many stayed unseen."""
        deadline = time.monotonic() + grace
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        return len(self._pending)


def run_steady(spec: SteadySpec) -> list[SteadyResult]:
    """Report on each phase's cadence until its duration is over (run in a worker)."""
    return asyncio.run(_run_steady(spec))


@dataclass
class _Agent:
    """A simulated agent's life across phases: its host, next seq and connection."""

    enrolled: Enrolled
    host: SimulatedHost
    rng: random.Random
    seq: int = 2  # seq 1 was the first report
    connection: _PersistentStream | None = None
    #: This agent's TLS sessions (None: a full handshake every report).
    sessions: TlsSessions | None = None
    #: Tables changed in reports that failed: the next report carries them, as the
    #: agent's spool would.
    unsent: set[str] = field(default_factory=set)


async def _run_steady(spec: SteadySpec) -> list[SteadyResult]:
    raise_file_limit()
    fleet = FleetBase.from_tables(spec.base)
    agents = [
        _Agent(
            a,
            SimulatedHost.derived(a.index, fleet),
            random.Random(a.index),
            sessions=TlsSessions() if spec.resume else None,
        )
        for a in spec.agents
    ]
    if spec.resume and not spec.persistent:
        await _warm_sessions(spec, agents)
    if spec.persistent:  # every stream open before the first phase, as daemons would be
        gate = asyncio.Semaphore(64)

        async def connect(agent: _Agent) -> None:
            async with gate:
                agent.connection = _PersistentStream(spec, agent)
                await agent.connection.open()

        await asyncio.gather(*(connect(agent) for agent in agents))
    results = []
    for phase, cadence in enumerate(spec.cadences):
        await asyncio.sleep(max(0.0, spec.phase_start(phase) - time.time()))
        results.append(await _phase(spec, cadence, agents))
    await asyncio.gather(*(a.connection.close() for a in agents if a.connection is not None))
    return results


async def _phase(spec: SteadySpec, cadence: float, agents: list[_Agent]) -> SteadyResult:
    result = SteadyResult()
    watcher = _ScoreWatcher(spec.db_path)
    cpu, wall = _cpu_seconds(), time.perf_counter()
    deadline = time.perf_counter() + spec.duration
    await asyncio.gather(*(_agent(spec, cadence, a, deadline, result, watcher) for a in agents))
    result.cpu_seconds = _cpu_seconds() - cpu
    result.wall_seconds = time.perf_counter() - wall
    result.flips_unseen = await asyncio.to_thread(watcher.stop, spec.gap / 2)
    result.score_seconds = watcher.seconds
    return result


async def _agent(
    spec: SteadySpec,
    cadence: float,
    agent: _Agent,
    deadline: float,
    result: SteadyResult,
    watcher: _ScoreWatcher,
) -> None:
    rng, host = agent.rng, agent.host
    flips = agent.enrolled.index % spec.flip_sample == 0
    start = min(time.perf_counter() + rng.uniform(0, cadence), deadline)
    await asyncio.sleep(max(0.0, start - time.perf_counter()))  # spread agents over the cadence
    while time.perf_counter() < deadline:
        due = time.perf_counter() + cadence * rng.uniform(0.9, 1.1)
        changed = host.advance(rng, spec.rates) | agent.unsent
        expected = None
        if flips and agent.seq % spec.flip_every == 0:
            expected = host.flip()
            changed.add("users")
        batch = _batch(host, agent.seq, changed, spec.plan_version)
        try:
            if agent.connection is not None:
                sent_at = await agent.connection.report(batch, result)
            else:
                sent_at = await _report_on_new_stream(spec, agent, batch, result)
            if expected is not None:
                watcher.expect(agent.enrolled.host_id, sent_at, expected)
            agent.unsent = set()
        except TransportError as error:
            result.errors[error.code.name] += 1
            agent.unsent = changed
        agent.seq += 1  # never reuse a seq: the collector may have stored it unacked
        await asyncio.sleep(max(0.0, min(due, deadline) - time.perf_counter()))


def _channel(spec: SteadySpec, agent: _Agent) -> grpc.aio.Channel:
    """A channel of the agent's own, resuming its own TLS sessions."""
    return open_channel(
        spec.address,
        spec.ca_cert,
        own_connection=True,
        sessions=agent.sessions,
        server_name=SERVER_NAME,
    )


async def _warm_sessions(spec: SteadySpec, agents: list[_Agent]) -> None:
    """Connect each agent once so it holds a session, as a daemon in steady state does
    (the enrolling worker process, whose sessions these were, may be another)."""
    gate = asyncio.Semaphore(64)

    async def warm(agent: _Agent) -> None:
        async with gate, _channel(spec, agent) as channel:
            # The session ticket has arrived once the channel is ready (measured).
            await asyncio.wait_for(channel.channel_ready(), timeout=30)

    await asyncio.gather(*(warm(agent) for agent in agents), return_exceptions=True)


async def _report_on_new_stream(
    spec: SteadySpec, agent: _Agent, batch: SpooledBatch, result: SteadyResult
) -> float:
    """The daemon's way: connect, hello, send, await the ack, close. Returns when sent."""
    started = time.perf_counter()
    async with _channel(spec, agent) as channel:
        stream = AgentStream(channel, agent.enrolled.credential)
        await stream.hello(AGENT_VERSION, spec.plan_version, 1)
        sent_at = time.perf_counter()
        result.wire_bytes += await stream.send(batch, 0)
        await _until_ack(stream, batch.seq)
        acked = time.perf_counter()
        await stream.finish()
    result.reports += 1
    result.ack_seconds.append(acked - sent_at)
    result.report_seconds.append(acked - started)
    return sent_at


class _PersistentStream:
    """One stream held open for the agent's whole life (the design the daemon left)."""

    def __init__(self, spec: SteadySpec, agent: _Agent) -> None:
        self._spec = spec
        self._agent = agent.enrolled
        self._channel = _channel(spec, agent)
        self._stream: AgentStream | None = None

    async def open(self) -> AgentStream:
        if self._stream is None:
            self._stream = AgentStream(self._channel, self._agent.credential)
            await self._stream.hello(AGENT_VERSION, self._spec.plan_version, 1)
        return self._stream

    async def report(self, batch: SpooledBatch, result: SteadyResult) -> float:
        stream = await self.open()
        sent_at = time.perf_counter()
        try:
            result.wire_bytes += await stream.send(batch, 0)
            await _until_ack(stream, batch.seq)
        except TransportError:
            self._stream = None  # reconnect at the next report
            raise
        acked = time.perf_counter()
        result.reports += 1
        result.ack_seconds.append(acked - sent_at)
        result.report_seconds.append(acked - sent_at)
        return sent_at

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.finish()
        await self._channel.close(None)
