"""Report cost: the fleet report for 50,000 hosts and a group PDF of 500, as auditors ask.

One host is enrolled, reports this machine's real facts and is evaluated through the real
service; the fleet is then cloned from it with direct inserts into the store's own tables
(hosts, batches, evaluations, result transitions, evidence), varied per host: a fifth of
the results flipped between pass and fail, some with a host-specific evidence set, a tenth
with an earlier transition in their history, a few hosts stale, and hosts spread over
departments of ``GROUP_SIZE`` (the groups come from their enroll secrets). Seeding that
way takes a minute for 50,000 hosts where enrolling and ingesting each would take an hour;
what a report reads is the same rows either way.

Then ``posture-collector report --format F --as-of T --output FILE [--workers N]`` runs in
a fresh process per run: wall time; CPU from ``wait4`` (which counts the report's worker
processes too, once it has reaped them); peak RSS as the largest sum of the resident sets
of the report process and its workers seen at one time (sampled every 20 ms), or the
report process's own ``VmHWM`` if larger. ``T`` is the instant seeding finished, so the
fleet is as fresh in the last run as in the first (a report as of a past instant reads
history exactly as a report of now does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import POLICIES, ROOT, Measure, Usage, measure, print_table
from benchmarks.evaluation import seed_hosts
from benchmarks.fleet import FleetBase, identity_of, machine_facts
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore

__all__ = ["FLEET_FORMATS", "GROUP_SIZE", "SeededFleet", "report_measures", "seed_fleet"]

#: PDF has its own target (one group of 500 hosts); the fleet target covers the others.
FLEET_FORMATS = ("table", "json", "csv", "html")
#: Hosts per department; the PDF target is one such group.
GROUP_SIZE = 500
FLEET_TARGET_HOSTS = 50_000
TARGET_SECONDS = 30.0
_USAGE_ERROR = 2
#: Share of (host, check) results flipped between pass and fail, with an earlier
#: transition in history, and of hosts that stopped reporting (stale).
_FLIPPED, _HISTORY, _STALE = 0.2, 0.1, 0.02


@dataclass(frozen=True)
class SeededFleet:
    db: Path
    hosts: int
    as_of: datetime
    group: str
    group_hosts: int


@dataclass(frozen=True)
class _Template:
    """The real host's results: (check id, status, reason, evidence digest)."""

    host_row: dict[str, object]
    results: list[tuple[str, str, str, str]]
    interval: int


def _template(store: SqliteStore) -> _Template:
    service = PostureService(store, load_packs(POLICIES))
    host = seed_hosts(service, FleetBase.from_tables(machine_facts()), 1)[0]
    service.close()
    cursor = store.conn.execute("SELECT * FROM hosts WHERE id = ?", (host.id,))
    names = [column[0] for column in cursor.description]
    row = dict(zip(names, cursor.fetchone(), strict=True))
    results = store.conn.execute(
        "SELECT check_id, new_status, reason, evidence_sha256 FROM result_transitions"
        " WHERE host_id = ? ORDER BY check_id",
        (host.id,),
    ).fetchall()
    return _Template(row, results, host.interval_seconds)


def seed_fleet(db: Path, count: int, group_size: int = GROUP_SIZE) -> SeededFleet:
    """A store holding ``count`` hosts (see the module docstring); returns the instant to
    report as of."""
    store = SqliteStore(db)
    template = _template(store)
    conn = store.conn
    conn.execute("PRAGMA synchronous=OFF")
    groups = max(1, count // group_size)
    secrets = _group_secrets(conn, groups)
    indexes = _drop_indexes(conn)
    now = datetime.now(UTC)
    conn.execute("BEGIN")
    for chunk in _chunks(range(1, count), 2_000):
        _insert_hosts(conn, template, chunk, secrets, now)
    conn.execute("COMMIT")
    for statement in indexes:
        conn.execute(statement)
    conn.execute("ANALYZE")
    store.close()
    members = sum(1 for index in range(1, count) if index % len(secrets) == 0)
    return SeededFleet(db, count, now + timedelta(seconds=1), "Dept 000", members)


def _group_secrets(conn: sqlite3.Connection, groups: int) -> list[int]:
    conn.executemany(
        "INSERT INTO enroll_secrets (name, secret_hash, created_at, group_name)"
        " VALUES (?, ?, ?, ?)",
        [_secret_row(g) for g in range(groups)],
    )
    rows = conn.execute("SELECT id FROM enroll_secrets WHERE name LIKE 'dept-%' ORDER BY name")
    return [row[0] for row in rows]


def _secret_row(group: int) -> tuple[str, str, str, str]:
    digest = hashlib.sha256(f"dept-{group}".encode()).hexdigest()
    return f"dept-{group:03d}", digest, datetime.now(UTC).isoformat(), f"Dept {group:03d}"


def _drop_indexes(conn: sqlite3.Connection) -> list[str]:
    """Drop the bulk-loaded tables' indexes, returning the statements that recreate them
    (building an index once is far cheaper than keeping it up to date row by row)."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('result_transitions', 'batches', 'hosts')"
    ).fetchall()
    for name, _ in rows:
        conn.execute(f"DROP INDEX {name}")
    return [sql for _, sql in rows]


def _chunks(values: range, size: int) -> Iterator[range]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _insert_hosts(
    conn: sqlite3.Connection,
    template: _Template,
    indexes: range,
    secrets: Sequence[int],
    now: datetime,
) -> None:
    hosts, batches, evaluations, transitions, evidence = [], [], [], [], {}
    for index in indexes:
        rng = random.Random(index)
        host_id = index + 1
        stale = rng.random() < _STALE
        collected = now - timedelta(seconds=rng.uniform(10, template.interval - 10))
        if stale:
            collected -= timedelta(seconds=3 * template.interval)
        enrolled = now - timedelta(days=30, seconds=index)
        hosts.append(_host_row(template, index, host_id, secrets, enrolled, collected))
        batches.append((host_id, 1, _ts(collected), _ts(collected), 20, f"spool-{index}", 1))
        evaluations.append((host_id, _ts(collected)))
        for check_id, status, reason, digest in template.results:
            row = _result(rng, host_id, check_id, status, reason, digest, enrolled, collected)
            transitions += row[0]
            evidence.update(row[1])
    columns = list(template.host_row)
    conn.executemany(
        f"INSERT INTO hosts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [[row[c] for c in columns] for row in hosts],
    )
    conn.executemany(
        "INSERT INTO batches (host_id, seq, collected_at, received_at, tables_changed,"
        " spool_id, agent_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
        batches,
    )
    conn.executemany("INSERT INTO evaluations (host_id, at) VALUES (?, ?)", evaluations)
    conn.executemany(
        "INSERT INTO result_transitions (host_id, check_id, old_status, new_status, at,"
        " reason, evidence_sha256, status_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        transitions,
    )
    conn.executemany(
        "INSERT INTO evidence (sha256, rows_json) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
        sorted(evidence.items()),
    )


def _host_row(
    template: _Template,
    index: int,
    host_id: int,
    secrets: Sequence[int],
    enrolled: datetime,
    collected: datetime,
) -> dict[str, object]:
    return {
        **template.host_row,
        **identity_of(index),
        "id": host_id,
        "credential_hash": hashlib.sha256(f"credential-{index}".encode()).hexdigest(),
        "enroll_secret_id": secrets[index % len(secrets)],
        "enrolled_at": _ts(enrolled),
        "last_seen_at": _ts(collected),
        "last_collected_at": _ts(collected),
    }


_Row = tuple[int, str, str | None, str, str, str, str, str]


def _result(
    rng: random.Random,
    host_id: int,
    check_id: str,
    status: str,
    reason: str,
    digest: str,
    enrolled: datetime,
    evaluated: datetime,
) -> tuple[list[_Row], dict[str, str]]:
    """One (host, check)'s transitions (oldest first) and the evidence sets they name."""
    evidence: dict[str, str] = {}
    if status in ("pass", "fail") and rng.random() < _FLIPPED:
        status = "fail" if status == "pass" else "pass"
        reason = "" if status == "pass" else "the query returned no rows"
        rows = [{"host": str(host_id), "value": str(rng.randrange(10**6))}] * (status == "fail")
        text = json.dumps(rows, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()
        evidence[digest] = text
    first = _ts(enrolled + timedelta(minutes=5))
    transitions: list[_Row] = []
    old = None
    if rng.random() < _HISTORY:
        earlier = "fail" if status == "pass" else "pass"
        transitions.append((host_id, check_id, None, earlier, first, "", digest, first))
        old = earlier
    at = _ts(evaluated) if old else first
    transitions.append((host_id, check_id, old, status, at, reason, digest, at))
    return transitions, evidence


def report_measures(
    host_counts: Sequence[int],
    runs: int,
    *,
    pdf_group: bool = True,
    workers: Sequence[int | None] = (None,),
    formats: Sequence[str] = FLEET_FORMATS,
) -> list[Measure]:
    """Each format of the fleet report at each size (with each number of worker
    processes; None: the report's default), then the PDF of one group."""
    measures = []
    with tempfile.TemporaryDirectory(prefix="posture-report-") as scratch:
        for count in host_counts:
            fleet = seed_fleet(Path(scratch) / f"report-{count}.db", count)
            target = TARGET_SECONDS if count >= FLEET_TARGET_HOSTS else None
            for fmt, worker_count in ((f, w) for f in formats for w in workers):
                name = f"fleet report, {count:,} hosts, {fmt}{_workers_label(worker_count)}"
                run = _Run(fleet, fmt, None, worker_count)
                measures += _measured(run, Path(scratch), runs, name, target)
            if pdf_group and count >= GROUP_SIZE:
                name = f"group report, {fleet.group_hosts:,} hosts, pdf"
                pdf_target = TARGET_SECONDS if count >= FLEET_TARGET_HOSTS else None
                run = _Run(fleet, "pdf", fleet.group, None)
                measures += _measured(run, Path(scratch), runs, name, pdf_target)
    return measures


def _workers_label(workers: int | None) -> str:
    if workers is None:
        return ""
    return f", {workers} worker{'s' if workers > 1 else ''}"


@dataclass(frozen=True)
class _Run:
    fleet: SeededFleet
    fmt: str
    group: str | None
    workers: int | None


def _measured(
    run: _Run, scratch: Path, runs: int, name: str, target: float | None
) -> list[Measure]:
    output = scratch / f"report.{run.fmt}"
    usages = [u for u in (_report(run, output) for _ in range(runs)) if u]
    if not usages:
        return []
    size = output.stat().st_size / 2**20
    return [
        measure(f"{name}: time", [u.wall_seconds for u in usages], "s", target),
        measure(f"{name}: CPU", [u.cpu_seconds for u in usages], "s"),
        measure(f"{name}: peak RSS", [u.peak_rss_mb for u in usages], "MB"),
        measure(f"{name}: file size", [size], "MB"),
    ]


def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """(resident set of ``pid`` and its descendants now, ``pid``'s own VmHWM), in KB."""
    total, own_peak, stack = 0, 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # gone meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
            elif line.startswith("VmHWM:") and current == pid:
                own_peak = int(line.split()[1])
        stack += [int(child) for child in children]
    return total, own_peak


class _TreePeak:
    """The peak of a process tree's summed resident sets (the report and its workers)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._pid, self._interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total, own = _tree_rss_kb(self._pid)
            self.peak_kb = max(self.peak_kb, total, own)
            self._stop.wait(self._interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def _run_tree(command: Sequence[str]) -> Usage:
    """Run ``command`` to completion: wall, CPU (``wait4``), peak RSS of its tree."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = _TreePeak(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Usage(usage.ru_utime + usage.ru_stime, peak.stop(), wall, process.returncode, "")


def _report(run: _Run, output: Path) -> Usage | None:
    """The report's cost, or None when the CLI does not offer ``fmt``."""
    command = [
        sys.executable, "-m", "collector", "report", "--db", str(run.fleet.db),
        "--policies", str(POLICIES), "--format", run.fmt, "--output", str(output),
        "--as-of", run.fleet.as_of.isoformat(),
    ]  # fmt: skip
    if run.group is not None:
        command += ["--group", run.group]
    if run.workers is not None:
        command += ["--workers", str(run.workers)]
    usage = _run_tree(command)
    if usage.returncode == _USAGE_ERROR:
        return None
    if usage.returncode != 0:
        raise RuntimeError(f"report --format {run.fmt} failed with exit code {usage.returncode}")
    return usage


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.report_cost [--hosts N ...] [--runs R]``: this section alone."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_cost")
    parser.add_argument("--hosts", type=int, action="append", help="fleet size (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, action="append", help="report --workers N (repeatable)"
    )
    parser.add_argument("--format", action="append", choices=FLEET_FORMATS, dest="formats")
    parser.add_argument("--no-pdf", action="store_true", help="skip the group PDF")
    args = parser.parse_args(argv)
    hosts = tuple(args.hosts or (FLEET_TARGET_HOSTS,))
    measures = report_measures(
        hosts, args.runs, pdf_group=not args.no_pdf, workers=tuple(args.workers or (None,)),
        formats=tuple(args.formats or FLEET_FORMATS),
    )  # fmt: skip
    print_table("Fleet report cost", measures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
