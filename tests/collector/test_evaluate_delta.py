"""Re-evaluation after a delta, through the real service on a real SQLite file with the
shipped packs: it rewrites the results of the checks the delta's tables feed and nothing
else, compares them with what they were (a check that kept its verdict and evidence keeps
its ``changed_at`` and records no change), and still measures a score drop on every check.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.drift import EventKind, EventType
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.policy.model import Status
from collector.service import PostureService
from collector.store import EventFilter, SqliteStore
from collector.store.base import ts

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROOT_ONLY = [{"uid": "0", "gid": "0", "username": "root", "shell": "/bin/bash"}]
WITH_TOOR = [*ROOT_ONLY, {"uid": "0", "gid": "0", "username": "toor", "shell": "/bin/sh"}]
SSH = [{"port": "22", "protocol": "6", "family": "2", "address": "0.0.0.0", "path": "/sshd"}]
ROOT_CHECK = "city.linux.only-root-uid-0"
#: A first report, then a delta of the users table alone.
REPORTS: tuple[dict[str, list[dict[str, str]]], ...] = (
    {"users": ROOT_ONLY, "listening_ports": SSH},
    {"users": WITH_TOOR},
)

#: A result row as stored: check id -> every column.
Rows = dict[str, tuple[object, ...]]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> Iterator[PostureService]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(ROOT / "policies"), clock=clock)
    yield service
    service.close()
    store.close()


def _host(service: PostureService) -> Host:
    return _host_named(service, "pc-1")


def _host_named(service: PostureService, name: str) -> Host:
    _, secret = service.create_enroll_secret(name)
    identity = HostIdentity(f"u-{name}", f"s-{name}", name, "linux", "12", "1")
    return service.enroll(secret, identity).host


def _report(service: PostureService, host: Host, seq: int, **tables: list[dict[str, str]]) -> None:
    facts = [TableFacts(name, rows) for name, rows in tables.items()]
    digests = {name: f"{name}-{seq}" for name in tables}
    service.ingest(host, FactBatch(seq, service.clock(), facts, digests))


def _rows(path: Path, host: Host) -> Rows:
    """The host's result rows exactly as stored (read with a connection of its own)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT * FROM results WHERE host_id = ?", (host.id,)).fetchall()
    return {str(row[1]): tuple(row) for row in rows}


def _percent(service: PostureService, statuses: dict[str, Status]) -> float:
    percent = service._score(statuses).percent
    assert percent is not None
    return percent


def _changes(service: PostureService, host: Host) -> list[tuple[str, str | None, str]]:
    return [
        (t["check_id"], t["old_status"], t["new_status"])
        for t in service.store.transitions_for(host.id)
    ]


def test_a_delta_rewrites_only_the_results_of_the_checks_its_table_feeds(
    service: PostureService, clock: Clock, tmp_path: Path
) -> None:
    host = _host(service)
    _report(service, host, 1, users=ROOT_ONLY, listening_ports=SSH)
    before, changes_before = _rows(tmp_path / "collector.db", host), _changes(service, host)
    clock.now = T0 + timedelta(minutes=5)
    _report(service, host, 2, users=WITH_TOOR)
    after = _rows(tmp_path / "collector.db", host)

    users_checks = {c for c, check in service.checks.items() if "users" in check.tables}
    reevaluated = {c for c, row in after.items() if row[5] == ts(clock.now)}
    assert ROOT_CHECK in reevaluated and reevaluated == users_checks & set(before)
    assert 1 < len(reevaluated) < len(before)
    assert set(after) == set(before)
    untouched = set(before) - reevaluated
    assert {c: after[c] for c in untouched} == {c: before[c] for c in untouched}
    # Status, reason, evidence (columns 2-4) decide whether a change is recorded.
    differ = {c for c in reevaluated if after[c][2:5] != before[c][2:5]}
    new_changes = _changes(service, host)[len(changes_before) :]
    assert ROOT_CHECK in differ and sorted(c for c, _, _ in new_changes) == sorted(differ)
    assert (ROOT_CHECK, "pass", "fail") in new_changes
    for check_id in reevaluated - differ:  # kept verdict and evidence: kept its since
        assert after[check_id][6] == before[check_id][6]


def test_a_report_that_changes_nothing_a_check_sees_records_no_change(
    service: PostureService, clock: Clock, tmp_path: Path
) -> None:
    host = _host(service)
    _report(service, host, 1, users=WITH_TOOR, listening_ports=SSH)
    changes = _changes(service, host)
    clock.now = T0 + timedelta(minutes=5)
    _report(service, host, 2, users=list(reversed(WITH_TOOR)))  # same users, other order
    assert _changes(service, host) == changes
    statuses = {r.check_id: r.status.value for r in service.store.results_for(host.id)}
    assert statuses[ROOT_CHECK] == "fail"
    (root,) = service.store.results_for(host.id, [ROOT_CHECK])
    assert root.changed_at == T0 and root.evaluated_at == clock.now
    assert {e["username"] for e in root.evidence} >= {"root", "toor"}


def test_a_flip_in_a_delta_is_scored_on_every_check_of_the_host(
    service: PostureService, clock: Clock
) -> None:
    """The delta evaluates only the users checks, but the score before and after counts
    every check of the host: a threshold just above that drop raises no score event, just
    below it does (scored on the users checks alone, the drop would be far larger)."""
    hosts = [_host_named(service, f"pc-{n}") for n in range(3)]
    measured, above, below = hosts
    service.score_drop_points = 100.0
    for seq, tables in enumerate(REPORTS, 1):
        clock.now = T0 + timedelta(minutes=5 * seq)
        statuses = service.store.host_statuses(measured.id)
        _report(service, measured, seq, **tables)
    after = service.store.host_statuses(measured.id)
    drop = _percent(service, statuses) - _percent(service, after)
    users_checks = {c for c, check in service.checks.items() if "users" in check.tables}
    users_drop = _percent(service, {c: s for c, s in statuses.items() if c in users_checks})
    users_drop -= _percent(service, {c: s for c, s in after.items() if c in users_checks})
    assert drop > 0 and drop + 1 < users_drop

    for host, threshold in ((above, drop + 0.01), (below, drop - 0.01)):
        service.score_drop_points = threshold
        for seq, tables in enumerate(REPORTS, 1):
            clock.now = T0 + timedelta(minutes=5 * seq)
            _report(service, host, seq, **tables)
    events = service.store.drift_events(EventFilter(kind=EventKind.COMPLIANCE))
    dropped = {e.host_id for e in events if e.event.type is EventType.SCORE_DROPPED}
    assert dropped == {below.id}
    regressed = {e.host_id for e in events if e.event.type is EventType.CHECK_REGRESSED}
    assert regressed == {measured.id, above.id, below.id}
