"""The fault harness: kill -9 real agents and a real collector at random moments, simulate a
72-hour outage and a full disk, and check that nothing acknowledged is lost or doubled.

    python -m benchmarks.faults                       # 4 agents, 1,000 kills, 864-batch outage
    python -m benchmarks.faults --quick               # the short form CI runs (~1 minute)
    python -m benchmarks.faults --flood               # one agent at 100x: the others' p99
    python -m benchmarks.faults --postgres --collectors 2   # a cluster on a private PostgreSQL
    python -m benchmarks.faults --db postgresql://u@host/db --collectors 2

Everything is real and on 127.0.0.1: ``posture-collector serve`` with TLS on a SQLite file,
``posture-agent run`` processes each with its own spool, reading facts through the agent's
osquery source from a churning osqueryd (``benchmarks.fault_osquery``) so that every agent is
its own host and every collection differs.

With ``--collectors N`` (N > 1, PostgreSQL only) the harness runs a cluster instead: N
collectors sharing one database (``--db URL``, or ``--postgres`` for a private server started
here) and one port (``SO_REUSEPORT``: the kernel spreads the agents' connections over those
up), and "the collector" below means the whole cluster, except in the kills. Phases, in
order:

1. **kills**: ``--kills`` times, after a random pause, kill -9 a collector (one time in
   four) or a random agent. A killed agent starts again at once. A killed collector stays
   down until the next kill, so the agents whose streams it held reconnect to a survivor,
   then starts again on the same port; with one collector (no survivor) it starts again at
   once. So a cluster always has a collector up, and every member gets killed in turn.
2. **outage**: the collector is down while every agent collects ``--outage-collections``
   times (864 = 72 hours at 5 minutes, time compressed with ``--collect-interval``); the
   last agent has a tiny spool (``--small-spool-kb``), so it must fold batches and report
   gaps; the others must hold every batch (0 gaps). Then the collector comes back.
3. **full disk**: agent 0 runs under ``RLIMIT_FSIZE`` (its spool file may grow only
   ``--full-disk-kb`` beyond its size; unprivileged, no tmpfs needed) while the collector is
   down: it must keep collecting by dropping intermediate states, then deliver.
4. **corrupt spool**: agent 1's spool gets a page of garbage; it must move it aside, start a
   new spool (a new epoch at the collector) and keep its enrollment.
5. **final**: every agent is killed, then ``posture-agent once`` collects and delivers.

Then, per agent: batches sent, acknowledged (from the agents' delivery logs), stored, lost
(acknowledged, not stored: must be 0), duplicated (a batch stored twice, or a fact change
recorded twice: must be 0), gaps the collector recorded, and whether the collector's final
state equals the agent's last collection (digests of the stored rows), all read from the
database the collectors shared, SQLite or PostgreSQL. Errors the collectors logged are
printed (the first traceback in full). Exit status 1 if anything is lost, doubled or
different, or if an agent or a collector exited by itself.
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.fault_osquery import serve_churning_osqueryd
from benchmarks.fault_procs import AgentProc, Cluster, spool_state
from benchmarks.fault_verify import AgentTally, read_delivery_logs, tally_agent
from collector.store.engine import parse_location

__all__ = ["FaultOptions", "FaultReport", "main", "run_faults"]


@dataclass(frozen=True)
class FaultOptions:
    agents: int = 4
    kills: int = 1000
    seed: int = 1
    #: Seconds between an agent's collections during the kills (the plan says 300).
    interval: float = 0.25
    #: Random pause before each kill, seconds (uniform).
    pause: tuple[float, float] = (0.2, 1.5)
    outage_collections: int = 864
    outage_interval: float = 0.03
    small_spool_kb: float = 48.0
    full_disk_kb: int = 192
    full_disk_collections: int = 200
    workdir: Path | None = None
    #: Collector processes sharing the database and the port (more than one: PostgreSQL).
    collectors: int = 1
    #: The collectors' database (path or URL); None: ``collector/collector.db`` in the workdir.
    db: str | None = None


@dataclass
class FaultReport:
    collectors: int = 1
    agent_kills: int = 0
    collector_kills: int = 0
    #: In a cluster: the random kills of each member, and how many of them cut a stream.
    kills_by_collector: Counter[str] = field(default_factory=Counter)
    kills_holding_stream: int = 0
    tallies: list[AgentTally] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(t.lost for t in self.tallies)

    @property
    def duplicated(self) -> int:
        return sum(t.duplicated for t in self.tallies)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.duplicated == 0


class Harness:
    def __init__(self, options: FaultOptions, workdir: Path) -> None:
        _check_cluster(options)
        self.options = options
        self.random = random.Random(options.seed)
        self.workdir = workdir
        self.cluster = Cluster(workdir / "collector", options.db, options.collectors)
        self.agents = [
            AgentProc(i, workdir / f"agent-{i}", f"{workdir}/q{i}.em")
            for i in range(options.agents)
        ]
        self.uuid = {agent.name: f"fault-{options.seed}-{agent.index}" for agent in self.agents}
        self.report = FaultReport(collectors=options.collectors)

    def note(self, text: str) -> None:
        self.report.notes.append(text)
        print(f"  {text}", flush=True)

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.report.problems.append(problem)
            print(f"  PROBLEM: {problem}", flush=True)

    # Setup ---------------------------------------------------------------------------

    @property
    def db(self) -> str:
        """Where every collector of the run stores (and the verification reads)."""
        return self.cluster.first.db

    def start_collectors(self) -> None:
        """Start every collector that is down, on the cluster's port."""
        self.cluster.start_down()

    def kill_collectors(self) -> None:
        """Kill -9 every collector that is up: the whole service is down."""
        self.report.collector_kills += self.cluster.kill_all()

    def enroll_all(self) -> None:
        self.start_collectors()
        first = self.cluster.first
        secret = first.cli("enroll-secret", "create", "faults").strip().splitlines()[0]
        assert first.pki is not None
        for agent in self.agents:
            agent.home.mkdir(parents=True, exist_ok=True)
        enrolling = [
            agent.enroll(self.cluster.address, first.pki.ca_cert, secret) for agent in self.agents
        ]
        for agent, process in zip(self.agents, enrolling, strict=True):
            if process.wait(timeout=120) != 0:
                raise RuntimeError(f"{agent.name} did not enroll: see {agent.home}/agent.log")

    def start_agents(self, *args: str) -> None:
        for agent in self.agents:
            agent.start("--collect-interval", str(self.options.interval), *args)

    # Phase 1: random kills -----------------------------------------------------------

    def kill_randomly(self, kills: int) -> None:
        self.start_agents()
        low, high = self.options.pause
        for _ in range(kills):
            time.sleep(self.random.uniform(low, high))
            self.revive()
            self.start_collectors()  # the one killed last time, once its streams moved
            if self.random.random() < 0.25:
                self.kill_a_collector(low)
            else:
                agent = self.random.choice(self.agents)
                agent.kill()
                self.report.agent_kills += 1
                agent.start("--collect-interval", str(self.options.interval))
        self.start_collectors()
        self.drain()

    def kill_a_collector(self, low: float) -> None:
        """Kill -9 one collector (a random member of a cluster). With a survivor it stays
        down until the next kill; alone, it starts again after a short pause."""
        members = self.cluster.members
        victim = members[0] if len(members) == 1 else self.random.choice(members)
        self.report.kills_holding_stream += victim.holds_stream()
        victim.kill()
        self.report.collector_kills += 1
        self.report.kills_by_collector[victim.name] += 1
        if not self.cluster.up():
            time.sleep(self.random.uniform(0, low))
            self.cluster.start(victim)

    # Phase 2: a 72-hour outage, time compressed -----------------------------------------

    def outage(self) -> None:
        opts = self.options
        self.kill_collectors()
        before = {}
        for agent in self.agents:
            agent.kill()
            self.report.agent_kills += 1
            before[agent.name] = spool_state(agent.spool)[1]
            args = ["--collect-interval", str(opts.outage_interval)]
            if agent is self.agents[-1] and len(self.agents) > 1:
                args += ["--spool-max-mb", str(opts.small_spool_kb / 1024)]
            agent.start(*args)
        self.wait(
            lambda: all(
                spool_state(a.spool)[1] - before[a.name] >= opts.outage_collections
                for a in self.agents
            ),
            f"{opts.outage_collections} collections per agent while the collector is down",
            timeout=60 + opts.outage_collections * opts.outage_interval * 20,
        )
        held = {}
        for agent in self.agents:
            agent.kill()
            self.report.agent_kills += 1
            _, last, pending, _ = spool_state(agent.spool)
            held[agent.name] = (last - before[agent.name], pending)
        self.note(
            "outage: spooled/held per agent "
            + ", ".join(f"{name} {made}/{kept}" for name, (made, kept) in held.items())
        )
        for agent in self.agents[:-1] if len(self.agents) > 1 else self.agents:
            made, kept = held[agent.name]
            self.check(kept >= made, f"{agent.name} dropped batches of the outage ({kept}<{made})")
        self.start_collectors()
        self.restart_agents()
        self.drain()

    def drain(self, *, restart: bool = False, timeout: float = 600) -> None:
        """Wait until every batch spooled before now is acknowledged; with ``restart``, kill
        and start the agents first, so none sits out a long reconnect backoff from a long
        collector outage."""
        if restart:
            self.restart_agents()
        target = {a.name: spool_state(a.spool)[:2] for a in self.agents}

        def delivered(agent: AgentProc) -> bool:
            spool_id, _, pending, oldest = spool_state(agent.spool)
            then_id, then_last = target[agent.name]
            return spool_id != then_id or pending == 0 or oldest > then_last

        self.wait(lambda: all(map(delivered, self.agents)), "every agent delivered", timeout)

    def restart_agents(self) -> None:
        for agent in self.agents:
            if agent.alive():
                agent.kill()
                self.report.agent_kills += 1
            agent.start("--collect-interval", str(self.options.interval))

    def wait(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for: {what}")
            self.revive()
            time.sleep(0.2)

    def revive(self) -> None:
        """An agent or a collector that ended by itself crashed: a finding. Record it and
        start it again."""
        for agent in self.agents:
            status = agent.died()
            if status is not None:
                self.check(False, f"{agent.name} exited by itself (status {status})")
                agent.restart()
        for collector in self.cluster.members:
            status = collector.died()
            if status is not None:
                self.check(False, f"{collector.name} exited by itself (status {status})")
                collector.kill()  # reaps it
                self.cluster.start(collector)

    # Phase 3: a full disk ------------------------------------------------------------

    def full_disk(self) -> None:
        agent, opts = self.agents[0], self.options
        self.kill_collectors()
        agent.kill()
        self.report.agent_kills += 1
        start = spool_state(agent.spool)[1]
        with sqlite3.connect(agent.spool) as conn:  # the WAL back into the file, then empty
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        limit = agent.spool.stat().st_size + opts.full_disk_kb * 1024
        agent.start(
            "--collect-interval",
            str(opts.outage_interval),
            log_name="fulldisk",
            file_size_limit=limit,
        )
        self.wait(
            lambda: (
                spool_state(agent.spool)[1] - start >= opts.full_disk_collections
                or not agent.alive()
            ),
            "collections on a full disk",
            timeout=60 + opts.full_disk_collections * opts.outage_interval * 20,
        )
        alive, log = agent.alive(), agent.log_text("fulldisk")
        agent.kill()
        self.report.agent_kills += 1
        self.check(alive, f"{agent.name} died on a full disk; see {agent.home}/fulldisk.log")
        self.check("no room" in log, f"{agent.name} never ran out of room (limit {limit} bytes)")
        made = spool_state(agent.spool)[1] - start
        self.note(f"full disk: {agent.name} collected {made} times under a {limit}-byte limit")
        self.start_collectors()
        self.drain(restart=True)

    # Phase 4: a corrupt spool ----------------------------------------------------------

    def corrupt_spool(self) -> None:
        agent = self.agents[1 % len(self.agents)]
        agent.kill()
        self.report.agent_kills += 1
        old_id = spool_state(agent.spool)[0]
        _corrupt_batches_page(agent.spool)
        agent.start("--collect-interval", str(self.options.interval), log_name="corrupt")
        self.wait(lambda: spool_state(agent.spool)[1] >= 2, "a fresh spool collecting", 120)
        new_id = spool_state(agent.spool)[0]
        self.check(new_id != old_id, f"{agent.name} kept its corrupt spool")
        self.check("is corrupt" in agent.log_text("corrupt"), f"{agent.name} logged no corruption")
        self.note(f"corrupt spool: {agent.name} moved it aside; spool {old_id[:8]} -> {new_id[:8]}")
        self.drain()

    # Phase 5: final delivery and verification -----------------------------------------

    def finish(self) -> None:
        for agent in self.agents:
            agent.kill()
        for agent in self.agents:
            done = agent.once()
            self.check(done.returncode == 0, f"{agent.name} once: {done.stderr[-500:]}")
        self.cluster.stop_all()
        self.note_collector_errors()
        for agent in self.agents:
            digests = _agent_digests(agent.spool)
            record = read_delivery_logs(agent.home)
            tally = tally_agent(agent.name, self.db, self.uuid[agent.name], record, digests)
            self.report.tallies.append(tally)
            self.check(
                not tally.mismatched, f"{agent.name} final state differs: {tally.mismatched}"
            )

    def note_collector_errors(self) -> None:
        """Errors the collectors logged (a storage error answered to an agent, such as two
        collectors racing on one batch): not a loss, since the agent keeps the batch and
        sends it again, but a finding worth reading; the first traceback is printed."""
        for collector in self.cluster.members:
            text = collector.log_path.read_text(errors="replace")
            errors = [line for line in text.splitlines() if _ERROR_LINE.search(line)]
            if errors:
                self.note(f"{collector.name} logged {len(errors)} error(s): {errors[0][:300]}")
                traceback = _first_traceback(text)
                if traceback:
                    self.note("first traceback:\n" + traceback)

    def stop_all(self) -> None:
        for agent in self.agents:
            agent.kill()
        self.cluster.kill_all()


_ERROR_LINE = re.compile(r" (ERROR|CRITICAL) ")


def _first_traceback(log: str) -> str:
    """The first Python traceback in ``log`` (up to its exception line), or ""."""
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            end = number + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end]):
                end += 1
            return "\n".join(lines[number : end + 1])
    return ""


def _check_cluster(options: FaultOptions) -> None:
    """Several collectors need a database they can share: PostgreSQL."""
    if options.collectors < 1:
        raise ValueError("--collectors must be at least 1")
    if options.collectors > 1 and (
        options.db is None or parse_location(options.db).engine != "postgresql"
    ):
        raise ValueError(
            f"--collectors {options.collectors} needs a database they can share: "
            "--db postgresql://... or --postgres (SQLite serves one collector)"
        )


def _agent_digests(spool: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{spool}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT table_name, digest FROM sent_digests").fetchall())


def _corrupt_batches_page(spool: Path) -> None:
    """Overwrite the root page of the spool's batches table (its state table stays readable)."""
    with sqlite3.connect(spool) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'batches'"
        ).fetchone()
    conn.close()
    with spool.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)


@contextmanager
def _osqueryds(harness: Harness) -> Iterator[None]:
    with ExitStack() as stack:
        for agent in harness.agents:
            stack.enter_context(serve_churning_osqueryd(agent.socket, harness.uuid[agent.name]))
        yield


def run_faults(options: FaultOptions) -> FaultReport:
    """Run every phase and verify; the report says what was lost, doubled or different."""
    with ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        harness = Harness(options, workdir)
        stack.enter_context(_osqueryds(harness))
        try:
            phases: list[tuple[str, Callable[[], None]]] = [
                ("enroll", harness.enroll_all),
                (f"{options.kills} kills", lambda: harness.kill_randomly(options.kills)),
                ("outage", harness.outage),
                ("full disk", harness.full_disk),
                ("corrupt spool", harness.corrupt_spool),
                ("final delivery", harness.finish),
            ]
            for name, phase in phases:
                started = time.monotonic()
                print(f"{name} ...", flush=True)
                phase()
                print(f"  ({time.monotonic() - started:.1f} s)", flush=True)
        finally:
            harness.stop_all()
        return harness.report


def print_report(report: FaultReport, out: Callable[[str], None] = print) -> None:
    header = ("", "sent", "acknowledged", "stored", "lost", "duplicated", "gaps (batches)",
              "spools", "final state")  # fmt: skip
    rows = [
        (t.name, t.sent, t.acknowledged, t.stored, t.lost, t.duplicated,
         f"{t.gap_records} ({t.gap_batches})", t.epochs,
         "equal" if not t.mismatched else "DIFFERS: " + ",".join(t.mismatched))
        for t in report.tallies
    ]  # fmt: skip
    total = ("total", *(sum(int(r[i]) for r in rows) for i in range(1, 6)),
             f"{sum(t.gap_records for t in report.tallies)}"
             f" ({sum(t.gap_batches for t in report.tallies)})", "", "")  # fmt: skip
    table = [tuple(map(str, row)) for row in (header, *rows, total)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out(_kills_line(report))
    for row in table:
        out("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    for problem in report.problems:
        out(f"PROBLEM: {problem}")
    out("result: " + ("OK: 0 lost, 0 duplicated" if report.ok else "FAILED"))


def _kills_line(report: FaultReport) -> str:
    """``kills: N (agents A, collector C)``; a cluster's line names each member's random
    kills and how many of them cut an agent's open stream."""
    total = report.agent_kills + report.collector_kills
    if report.collectors == 1:
        return f"kills: {total} (agents {report.agent_kills}, collector {report.collector_kills})"
    each = ", ".join(f"{name} {count}" for name, count in sorted(report.kills_by_collector.items()))
    return (
        f"kills: {total} (agents {report.agent_kills}, collectors {report.collector_kills};"
        f" random: {each}; {report.kills_holding_stream} cut an agent's stream)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = FaultOptions()
    add = parser.add_argument
    add("--agents", type=int, default=d.agents, help="agent processes (%(default)s)")
    add("--kills", type=int, default=d.kills, help="random kill -9s (%(default)s)")
    add("--seed", type=int, default=d.seed, help="random seed (%(default)s)")
    add("--interval", type=float, default=d.interval, help="seconds between collections")
    add(
        "--outage-collections",
        type=int,
        default=d.outage_collections,
        help="collections while the collector is down (864 = 72 h at 5 min)",
    )
    add(
        "--outage-interval",
        type=float,
        default=d.outage_interval,
        help="seconds between collections in the outage and full-disk phases",
    )
    add("--full-disk-kb", type=int, default=d.full_disk_kb, help="room left on the 'disk'")
    add(
        "--pause",
        type=float,
        nargs=2,
        default=d.pause,
        metavar=("LOW", "HIGH"),
        help="random pause before each kill, seconds (%(default)s)",
    )
    add("--workdir", type=Path, help="keep state and logs here (default: a temp dir)")
    add(
        "--collectors",
        type=int,
        default=d.collectors,
        help="collectors sharing the database and the port (%(default)s; more: PostgreSQL)",
    )
    add("--db", help="the collectors' database, a path or postgresql://... URL")
    add(
        "--postgres",
        action="store_true",
        help="start a private PostgreSQL server (benchmarks/pgserver.py) for --db",
    )
    add("--quick", action="store_true", help="the CI size: 2 agents, 20 kills, short phases")
    add("--flood", action="store_true", help="measure one agent flooding at 100x instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.flood:
        from benchmarks.flood import FloodOptions, print_flood, run_flood

        print_flood(run_flood(FloodOptions(seed=args.seed, workdir=args.workdir)))
        return 0
    options = FaultOptions(
        agents=args.agents,
        kills=args.kills,
        seed=args.seed,
        interval=args.interval,
        outage_collections=args.outage_collections,
        outage_interval=args.outage_interval,
        full_disk_kb=args.full_disk_kb,
        pause=(args.pause[0], args.pause[1]),
        workdir=args.workdir,
        collectors=args.collectors,
        db=args.db,
    )
    if args.quick:  # the short form CI runs (tests/integration/test_faults.py)
        options = replace(
            options,
            agents=2,
            kills=20,
            pause=(0.1, 0.4),
            outage_collections=30,
            small_spool_kb=8.0,
            full_disk_collections=40,
        )
    if args.postgres and args.db:
        _parser().error("--postgres starts its own database: give --db or --postgres, not both")
    started = time.monotonic()
    with _private_postgres(args.postgres) as url:
        options = replace(options, db=url or options.db)
        try:
            _check_cluster(options)
        except ValueError as error:
            _parser().error(str(error))
        report = run_faults(options)
    print_report(report)
    print(f"({time.monotonic() - started:.0f} s)")
    return 0 if report.ok else 1


@contextmanager
def _private_postgres(wanted: bool) -> Iterator[str | None]:
    """A fresh database on a private PostgreSQL server (durable: fsync on, as deployed)
    when ``wanted``, stopped and deleted afterwards; PostgresUnavailable says why not."""
    if not wanted:
        yield None
        return
    from benchmarks.pgserver import PostgresServer

    server = PostgresServer(durable=True).start()
    try:
        print(f"PostgreSQL: a private server on 127.0.0.1:{server.port}", flush=True)
        yield server.create_database("faults")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
