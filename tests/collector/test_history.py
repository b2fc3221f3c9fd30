"""History through the real service and store: result changes with their evidence, as-of
reads, the report seal, compliance drift on ingest, and compaction that loses no retained
instant. A small pack in tmp_path keeps the scenarios independent of the shipped packs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from collector.drift import EventKind, EventType
from collector.model import FactBatch, Host, HostIdentity, TableFacts
from collector.policy.loader import load_packs
from collector.policy.model import Status
from collector.service import PostureService
from collector.store import EventFilter, SqliteStore
from collector.store.schema import migrations

PACK = """\
name: drift-test
version: "1.0"
description: checks the history tests flip at will
checks:
  - id: test.linux.only-root-uid-0
    title: Only root has UID 0
    description: d
    rationale: r
    remediation: m
    severity: critical
    platforms: [linux]
    frameworks:
      nist_800_53r5: ["AC-6"]
      cjis: {version: "5.9", sections: ["5.5.2.1"]}
    query: >-
      SELECT 1 FROM users WHERE uid = 0 AND username = 'root'
      AND NOT EXISTS (SELECT 1 FROM users WHERE uid = 0 AND username <> 'root')
    evidence: SELECT username, uid FROM users WHERE uid = 0 ORDER BY username
  - id: test.linux.no-telnet
    title: Nothing listens on the telnet port
    description: d
    rationale: r
    remediation: m
    severity: low
    platforms: [linux]
    frameworks: {nist_800_53r5: ["CM-7"], cis_controls_v8: ["4.8"]}
    query: SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM listening_ports WHERE port = 23)
"""
ROOT_ONLY = [{"uid": "0", "gid": "0", "username": "root"}]
TOOR = [*ROOT_ONLY, {"uid": "0", "gid": "0", "username": "toor"}]
SSH = [{"port": "22", "protocol": "6", "family": "2", "address": "0.0.0.0", "path": "/sshd"}]
TELNET = [*SSH, {**SSH[0], "port": "23", "path": "/usr/sbin/in.telnetd"}]
ROOT_CHECK = "test.linux.only-root-uid-0"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **span: float) -> datetime:
        self.now += timedelta(**span)
        return self.now


class Fleet:
    """A real service on a real SQLite file, fed batches as the transport would."""

    def __init__(self, service: PostureService, clock: Clock) -> None:
        self.service, self.clock, self.store = service, clock, service.store
        self.seqs: dict[int, int] = {}
        _, self.secret = service.create_enroll_secret("test")

    def enroll(self, hostname: str) -> Host:
        identity = HostIdentity(
            f"UUID-{hostname}", f"SN-{hostname}", hostname, "linux", "Debian 12", "0.1.0"
        )
        return self.service.enroll(self.secret, identity).host

    def report(self, host: Host, **tables: list[dict[str, str]]) -> None:
        seq = self.seqs[host.id] = self.seqs.get(host.id, 0) + 1
        changed = [TableFacts(name, rows) for name, rows in tables.items()]
        digests = {name: f"{name}-{seq}" for name in tables}
        self.service.ingest(host, FactBatch(seq, self.clock(), changed, digests))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    (tmp_path / "packs" / "drift-test").mkdir(parents=True)
    (tmp_path / "packs" / "drift-test" / "pack.yaml").write_text(PACK)
    clock = Clock()
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, load_packs(tmp_path / "packs"), clock=clock)
    yield Fleet(service, clock)
    service.close()
    store.close()


def _status_as_of(fleet: Fleet, host: Host, at: datetime) -> dict[str, Status]:
    return {r.check_id: r.status for r in fleet.store.results_as_of(at, {host.id})}


def test_every_result_change_is_kept_with_its_evidence(fleet: Fleet) -> None:
    host = fleet.enroll("pd-1")
    fleet.report(host, users=ROOT_ONLY, listening_ports=SSH)
    first = fleet.clock()
    fleet.clock.advance(minutes=5)
    fleet.report(host, users=TOOR)
    second = fleet.clock()
    fleet.clock.advance(minutes=5)
    fleet.report(host, users=[*TOOR, {"uid": "0", "gid": "0", "username": "zz"}])

    transitions = [t for t in fleet.store.transitions_for(host.id) if t["check_id"] == ROOT_CHECK]
    assert [(t["old_status"], t["new_status"]) for t in transitions] == [
        (None, "pass"),
        ("pass", "fail"),
        ("fail", "fail"),  # same status, new evidence: kept too
    ]
    history = {r.check_id: r for r in fleet.store.results_as_of(second, {host.id})}
    assert history[ROOT_CHECK].evidence == (
        {"username": "root", "uid": "0"},
        {"username": "toor", "uid": "0"},
    )
    assert history[ROOT_CHECK].since == second
    assert _status_as_of(fleet, host, first)[ROOT_CHECK] is Status.PASS
    latest = {r.check_id: r for r in fleet.store.results_as_of(fleet.clock(), {host.id})}
    assert len(latest[ROOT_CHECK].evidence) == 3 and latest[ROOT_CHECK].since == second
    assert _status_as_of(fleet, host, first - timedelta(seconds=1)) == {}


def test_a_flip_raises_exactly_one_compliance_event_and_a_first_result_none(
    fleet: Fleet,
) -> None:
    host = fleet.enroll("pd-1")
    fleet.service.score_drop_points = 100.0
    fleet.report(host, users=ROOT_ONLY, listening_ports=SSH)
    fleet.clock.advance(minutes=5)
    fleet.report(host, users=TOOR)
    fleet.clock.advance(minutes=5)
    fleet.report(host, users=TOOR, listening_ports=SSH)  # nothing flips again
    events = fleet.store.drift_events(EventFilter(kind=EventKind.COMPLIANCE))
    assert [(e.host_id, e.event.type, e.event.check_id) for e in events] == [
        (host.id, EventType.CHECK_REGRESSED, ROOT_CHECK)
    ]
    assert events[0].at == datetime(2025, 3, 3, 9, 5, tzinfo=UTC)


def test_a_score_drop_beyond_the_threshold_is_an_event(fleet: Fleet) -> None:
    host = fleet.enroll("pd-1")
    fleet.report(host, users=ROOT_ONLY, listening_ports=SSH)
    fleet.clock.advance(minutes=5)
    fleet.report(host, listening_ports=TELNET)  # low: 10/11 -> 90.9, a 9.1 point drop
    fleet.clock.advance(minutes=5)
    fleet.report(host, users=TOOR)  # critical: 90.9 -> 0
    compliance = EventFilter(kind=EventKind.COMPLIANCE)
    kinds = [e.event.type for e in fleet.store.drift_events(compliance)]
    assert kinds == [
        EventType.CHECK_REGRESSED,
        EventType.CHECK_REGRESSED,
        EventType.SCORE_DROPPED,
    ]


def test_a_report_seal_stamps_every_later_write_after_it(fleet: Fleet) -> None:
    host = fleet.enroll("pd-1")
    fleet.report(host, users=ROOT_ONLY)
    sealed = fleet.store.seal(fleet.clock.advance(minutes=1))
    fleet.clock.now = sealed - timedelta(seconds=30)  # a writer that read the clock earlier
    fleet.report(host, users=TOOR)
    assert _status_as_of(fleet, host, sealed)[ROOT_CHECK] is Status.PASS
    (latest,) = [r for r in fleet.store.results_as_of(sealed + timedelta(seconds=1), {host.id})
                 if r.check_id == ROOT_CHECK]  # fmt: skip
    assert latest.status is Status.FAIL and latest.changed_at > sealed


def test_compaction_keeps_the_state_at_every_retained_instant(fleet: Fleet) -> None:
    host = fleet.enroll("pd-1")
    instants = []
    for day, users in enumerate([ROOT_ONLY, TOOR, ROOT_ONLY, TOOR, ROOT_ONLY]):
        fleet.report(host, users=users, listening_ports=TELNET if day % 2 else SSH)
        instants.append(fleet.clock())
        fleet.clock.advance(days=1)
    boundary = instants[2] + timedelta(hours=12)
    retained = [boundary, instants[3], instants[3] + timedelta(hours=1), instants[4]]

    def state() -> list[object]:
        return [
            (
                fleet.store.results_as_of(at, {host.id}),
                fleet.store.view_state_as_of(host.id, "listening_ports", at),
                fleet.store.view_state_as_of(host.id, "users", at),
                fleet.store.host_activity_as_of(at, {host.id}),
            )
            for at in retained
        ]

    before = state()
    deleted = fleet.store.compact_history(boundary, [host.id])
    assert deleted > 0
    assert state() == before
    assert fleet.store.history_floor() == boundary
    assert fleet.store.stored_seqs(host.id) == [3, 4, 5]
    # The compacted seqs still count as stored: a late resend is a duplicate.
    resend = FactBatch(1, fleet.clock(), [TableFacts("users", TOOR)], {"users": "x"})
    assert fleet.service.ingest(host, resend).duplicate


def test_fact_history_records_row_level_changes_with_old_and_new_values(fleet: Fleet) -> None:
    host = fleet.enroll("pd-1")
    packages = [{"name": "openssl", "arch": "amd64", "version": "3.0.11"}]
    fleet.report(host, deb_packages=packages)
    fleet.clock.advance(minutes=5)
    fleet.report(host, deb_packages=[{**packages[0], "version": "3.0.13"}])
    changes = fleet.store.fact_changes(host.id, "deb_packages")
    assert [(c.change, c.old, c.new) for c in changes] == [
        ("added", None, '{"version":"3.0.11"}'),
        ("modified", '{"version":"3.0.11"}', '{"version":"3.0.13"}'),
    ]
    assert changes[1].seq == 2 and changes[1].at == fleet.clock()


def test_a_database_from_before_history_is_brought_forward_with_its_results(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m002_history_drift_groups_waivers")
    at = "2025-01-02T03:04:05.000000+00:00"
    evidence = '[{"uid": "0", "username": "toor"}]'
    old.executescript(
        "INSERT INTO enroll_secrets (name, secret_hash, created_at) VALUES ('s', 'h', '');"
        "INSERT INTO hosts (hardware_uuid, hardware_serial, hostname, platform, os_version,"
        " agent_version, credential_hash, enroll_secret_id, enrolled_at, interval_seconds)"
        f" VALUES ('U', 'S', 'old-1', 'linux', 'Debian 12', '0.1.0', 'c', 1, '{at}', 300);"
        "INSERT INTO results VALUES"
        f" (1, 'test.linux.only-root-uid-0', 'fail', '', '{evidence}', '{at}', '{at}');"
        "INSERT INTO result_transitions (host_id, check_id, old_status, new_status, at, reason,"
        f" evidence_sha256) VALUES (1, 'test.linux.only-root-uid-0', NULL, 'fail', '{at}', '',"
        f" '{hashlib.sha256(evidence.encode()).hexdigest()}');"
    )
    old.conn.close()
    store = SqliteStore(path)
    try:
        (result,) = store.results_as_of(datetime(2025, 2, 1, tzinfo=UTC), {1})
        assert (result.status, result.since) == (Status.FAIL, datetime.fromisoformat(at))
        assert result.evidence == ({"uid": "0", "username": "toor"},)
    finally:
        store.close()
