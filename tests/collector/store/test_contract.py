"""The storage contract, run on every engine: the same tests on SQLite and PostgreSQL.

Each test gets a fresh database on each engine (``store`` / ``engine`` in conftest.py) and
drives the store's typed methods as the service does; several stores opened on one
database stand for several collectors sharing it. Nothing here knows which engine it runs
on, except where a test says why.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from collector.delivery import StaleSpoolError
from collector.drift import EventKind, EventType
from collector.groups import GroupRule
from collector.model import FactBatch, Host, HostIdentity, StoredResult, TableFacts
from collector.policy.evaluate import Evaluator
from collector.policy.loader import load_packs
from collector.policy.model import Status
from collector.service import PostureService
from collector.store import EventFilter, HostExistsError, IssuedReport, SqliteStore
from collector.store.facts import apply_host_rows
from collector.store.schema import MIGRATIONS
from collector.waivers import Waiver, WaiverScope

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
ROOT_ONLY = [{"uid": "0", "gid": "0", "username": "root", "shell": "/bin/bash"}]
WITH_TOOR = [*ROOT_ONLY, {"uid": "0", "gid": "0", "username": "toor", "shell": "/bin/sh"}]
SSH = [{"port": "22", "protocol": "6", "family": "2", "address": "0.0.0.0", "path": "/sshd"}]


def _identity(name: str) -> HostIdentity:
    return HostIdentity(f"UUID-{name}", f"SN-{name}", name, "linux", "Debian 12", "0.1.0")


def _host(store: SqliteStore, name: str = "pd-1", at: datetime = T0) -> Host:
    secret = store.find_live_enroll_secret("hash-of-secret")
    if secret is None:
        secret = store.create_enroll_secret("test", "hash-of-secret", at)
    return store.create_host(_identity(name), f"cred-{name}", secret, 300, at)


def _batch(seq: int, at: datetime = T0, **tables: list[dict[str, str]]) -> FactBatch:
    changed = [TableFacts(name, rows) for name, rows in tables.items()]
    return FactBatch(seq, at, changed, {name: f"{name}-{seq}" for name in tables})


def _result(host: Host, check: str, status: Status, evidence: Any = ()) -> StoredResult:
    return StoredResult(host.id, check, status, "", tuple(evidence), T0, T0)


# Schema -----------------------------------------------------------------------------------


def test_every_migration_runs_once_and_reopening_changes_nothing(engine: Any) -> None:
    first = engine.open()
    host = _host(first)
    first.close()
    second = engine.open()  # a second start (or a second collector) migrates nothing again
    try:
        assert second.get_host(host.id) == host
        table = "posture_migrations" if engine.name == "postgresql" else "_sqlite_migrations"
        names = [name for (name,) in second.conn.execute(f"SELECT name FROM {table}")]
        assert sorted(names) == sorted(name for name, _ in MIGRATIONS)
    finally:
        second.close()


# Hosts ------------------------------------------------------------------------------------


def test_hosts_round_trip_and_one_identity_enrolls_once(store: SqliteStore) -> None:
    host = _host(store, "pd-1")
    other = _host(store, "pd-2")
    assert other.id != host.id
    assert store.host_by_credential("cred-pd-1") == host
    assert [h.identity.hostname for h in store.list_hosts()] == ["pd-1", "pd-2"]
    assert store.find_hosts(str(host.id)) == [host]
    assert store.find_hosts("UUID-pd-2") == [other]
    with pytest.raises(HostExistsError):
        store.create_host(_identity("pd-1"), "another", store.list_enroll_secrets()[0], 300, T0)
    secrets = store.list_enroll_secrets()
    assert len(secrets) == 1 and secrets[0].uses == 2  # the refused enrolment took no use
    store.revoke_credential(host.id, T0)
    revoked = store.get_host(host.id)
    assert revoked is not None and revoked.credential_revoked


def test_host_counts_tell_enrolled_from_stale(store: SqliteStore) -> None:
    fresh, late, never = _host(store, "fresh"), _host(store, "late"), _host(store, "never")
    store.apply_batch(fresh.id, _batch(1, T0 + timedelta(minutes=9), users=ROOT_ONLY), T0)
    store.apply_batch(late.id, _batch(1, T0, users=ROOT_ONLY), T0)
    assert never.last_collected_at is None
    assert store.host_counts(T0 + timedelta(minutes=11), 2) == (3, 2)  # 300 s interval
    assert store.host_counts(T0 + timedelta(minutes=9), 2) == (3, 1)


# Ingest -----------------------------------------------------------------------------------


def test_a_batch_is_stored_once_per_host_and_seq(store: SqliteStore) -> None:
    host = _host(store)
    first = store.apply_batch(host.id, _batch(1, users=ROOT_ONLY, listening_ports=SSH), T0)
    again = store.apply_batch(host.id, _batch(1, users=WITH_TOOR), T0)
    assert not first.duplicate and first.changed_tables == {"users", "listening_ports"}
    assert again.duplicate
    assert store.host_rows(host.id, "users") == ROOT_ONLY  # the duplicate changed nothing
    assert store.stored_seqs(host.id) == [1]
    states = store.table_states(host.id)
    assert states["users"].digest == "users-1" and states["users"].collected_at == T0
    updated = store.get_host(host.id)
    assert updated is not None and updated.last_seq == 1 and updated.last_collected_at == T0


def test_a_changed_table_replaces_its_rows_and_a_failed_one_keeps_them(
    store: SqliteStore,
) -> None:
    host = _host(store)
    store.apply_batch(host.id, _batch(1, users=WITH_TOOR, listening_ports=SSH), T0)
    failed = FactBatch(2, T0, [TableFacts("listening_ports", [], "probe timed out")], {})
    store.apply_batch(host.id, failed, T0)
    store.apply_batch(host.id, _batch(3, users=ROOT_ONLY), T0)
    assert store.host_rows(host.id, "users") == ROOT_ONLY
    assert store.host_rows(host.id, "listening_ports") == SSH
    assert store.table_states(host.id)["listening_ports"].error == "probe timed out"
    assert store.batch_count(host.id) == 3


def test_a_plan_that_drops_a_column_leaves_no_stale_value_behind(store: SqliteStore) -> None:
    """The store remembers which columns a table's rows fill, to skip testing the others
    for NULL; a report filling fewer columns must still clear the dropped one, after a
    failed collection too."""
    host = _host(store)
    store.apply_batch(host.id, _batch(1, users=ROOT_ONLY), T0)
    store.apply_batch(host.id, FactBatch(2, T0, [TableFacts("users", [], "timed out")], {}), T0)
    narrower = [{k: v for k, v in row.items() if k != "shell"} for row in ROOT_ONLY]
    store.apply_batch(host.id, _batch(3, users=narrower), T0)
    assert store.host_rows(host.id, "users") == narrower
    store.apply_batch(host.id, _batch(4, users=ROOT_ONLY), T0)
    store.apply_batch(host.id, _batch(5, users=ROOT_ONLY), T0)
    assert store.host_rows(host.id, "users") == ROOT_ONLY


def test_rows_an_older_collector_stored_are_read_with_their_null_test(
    store: SqliteStore,
) -> None:
    """A collector from before the stored-columns record (a rolling upgrade) stores rows
    and moves the table's seq on without it; the record is then not trusted."""
    host = _host(store)
    narrower = [{k: v for k, v in row.items() if k != "shell"} for row in ROOT_ONLY]
    store.apply_batch(host.id, _batch(1, users=narrower), T0)
    apply_host_rows(store.conn, host.id, "users", ROOT_ONLY)  # what the older one writes
    store.conn.execute("UPDATE host_tables SET seq = 2 WHERE host_id = ?", (host.id,))
    store.conn.commit()
    store.apply_batch(host.id, _batch(3, users=narrower), T0)
    assert store.host_rows(host.id, "users") == narrower


def test_a_digest_the_store_does_not_hold_asks_for_that_table(store: SqliteStore) -> None:
    host = _host(store)
    store.apply_batch(host.id, _batch(1, users=ROOT_ONLY), T0)
    batch = FactBatch(2, T0, [], {"users": "users-1", "listening_ports": "unknown"})
    outcome = store.apply_batch(host.id, batch, T0)
    assert outcome.mismatched_tables == {"listening_ports"}


def test_a_second_collector_refuses_a_batch_the_first_stored(engine: Any) -> None:
    """A host's stream moving between collectors: the resent batch is a duplicate."""
    first, second = engine.open(), engine.open()
    try:
        host = _host(first)
        assert not first.apply_batch(host.id, _batch(1, users=ROOT_ONLY), T0).duplicate
        assert second.apply_batch(host.id, _batch(1, users=WITH_TOOR), T0).duplicate
        assert not second.apply_batch(host.id, _batch(2, users=WITH_TOOR), T0).duplicate
        assert first.stored_seqs(host.id) == [1, 2]
        assert first.host_rows(host.id, "users") == WITH_TOOR
    finally:
        first.close()
        second.close()


def test_two_collectors_storing_one_batch_at_once_store_it_once(engine: Any) -> None:
    """Both try (host, seq) together: at most one stores it; the other reports a duplicate
    or fails (not acknowledged, so the agent resends it and then hears "duplicate")."""
    stores = [engine.open() for _ in range(2)]
    try:
        host = _host(stores[0])
        outcomes: list[object] = []
        start = threading.Barrier(2)

        def store_it(store: SqliteStore, rows: list[dict[str, str]]) -> None:
            start.wait()
            try:
                outcomes.append(store.apply_batch(host.id, _batch(7, users=rows), T0).duplicate)
            except sqlite3.Error as error:
                outcomes.append(error)

        threads = [
            threading.Thread(target=store_it, args=(store, rows))
            for store, rows in zip(stores, (ROOT_ONLY, WITH_TOOR), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert outcomes.count(False) == 1, outcomes
        assert stores[0].stored_seqs(host.id) == [7]
        fact_history = stores[0].fact_changes(host.id, "users")
        assert len({change.seq for change in fact_history}) == 1
    finally:
        for store in stores:
            store.close()


def _race(stores: list[SqliteStore], work: Any) -> list[object]:
    """Run ``work(store)`` in one thread per store, all released at once; what each
    returned or raised."""
    outcomes: list[object] = []
    start = threading.Barrier(len(stores))

    def run(store: SqliteStore) -> None:
        start.wait()
        try:
            outcomes.append(work(store))
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def _apply(store: SqliteStore, host: Host, batch: FactBatch) -> object:
    return store.apply_batch(host.id, batch, T0)


def test_collectors_racing_one_batch_store_it_once_and_the_rest_hear_duplicate(
    engine: Any,
) -> None:
    """Never a unique-key error: the losers wait for the winner's commit, then find the
    batch stored (so every collector can ack it, and the agent moves on)."""
    stores = [engine.open() for _ in range(3)]
    try:
        host = _host(stores[0])
        for seq in (1, 2, 3):
            batch = _batch(seq, users=ROOT_ONLY)
            outcomes = _race(stores, partial(_apply, host=host, batch=batch))
            assert sorted(o.duplicate for o in outcomes) == [False, True, True], outcomes
        assert stores[0].stored_seqs(host.id) == [1, 2, 3]
        assert [c.change for c in stores[0].fact_changes(host.id, "users")] == ["added"]
    finally:
        for store in stores:
            store.close()


def test_collectors_starting_one_new_spool_at_once_share_its_epoch(engine: Any) -> None:
    first, second = engine.open(), engine.open()
    try:
        host = _host(first)
        first.apply_batch(host.id, replace(_batch(1, users=ROOT_ONLY), spool_id="a" * 32), T0)
        new = [replace(_batch(seq, users=WITH_TOOR), spool_id="b" * 32) for seq in (1, 2)]
        outcomes = _race(
            [first, second],
            lambda store: store.apply_batch(host.id, new[store is second], T0),
        )
        assert all(not getattr(o, "duplicate", True) for o in outcomes), outcomes
        epochs = first.spool_epochs(host.id)
        assert [(e.spool_id, e.base_seq) for e in epochs] == [("a" * 32, 0), ("b" * 32, 1)]
        assert first.stored_seqs(host.id) == [1, 2, 3]
    finally:
        first.close()
        second.close()


def test_batches_stored_together_commit_together_and_fail_alone(store: SqliteStore) -> None:
    """Group commit: one transaction, each batch in a savepoint of its own."""
    one, two = _host(store, "pd-1"), _host(store, "pd-2")
    store.apply_batch(one.id, replace(_batch(1, users=ROOT_ONLY), spool_id="a" * 32), T0)
    store.apply_batch(one.id, replace(_batch(1, users=ROOT_ONLY), spool_id="b" * 32), T0)
    stale = replace(_batch(2, users=WITH_TOOR), spool_id="a" * 32)  # a replaced spool
    fresh = replace(_batch(2, users=WITH_TOOR), spool_id="b" * 32)
    outcomes = store.apply_batches(
        [(one.id, stale), (two.id, _batch(1, users=ROOT_ONLY, listening_ports=SSH)),
         (one.id, fresh), (one.id, fresh)],
        T0,
    )  # fmt: skip
    assert isinstance(outcomes[0], StaleSpoolError)
    assert [getattr(o, "duplicate", None) for o in outcomes[1:]] == [False, False, True]
    assert store.host_rows(one.id, "users") == WITH_TOOR
    assert store.host_rows(two.id, "listening_ports") == SSH
    assert store.stored_seqs(one.id) == [1, 2, 3] and store.stored_seqs(two.id) == [1]


def test_a_delta_keeps_the_rows_it_repeats_and_records_only_what_changed(
    store: SqliteStore,
) -> None:
    host = _host(store)
    packages = [{"name": f"pkg{n}", "version": "1.0", "arch": "amd64"} for n in range(5)]
    store.apply_batch(host.id, _batch(1, deb_packages=packages), T0)
    upgraded = {**packages[2], "version": "1.1"}
    delta = [packages[0], packages[1], upgraded, packages[4], {**packages[0], "name": "new"}]
    store.apply_batch(host.id, _batch(2, T0 + timedelta(minutes=5), deb_packages=delta), T0)
    assert store.host_rows(host.id, "deb_packages") == [
        packages[0], packages[1], packages[4], upgraded, {**packages[0], "name": "new"}
    ]  # fmt: skip
    later = [c for c in store.fact_changes(host.id, "deb_packages") if c.seq == 2]
    assert sorted((json.loads(c.identity)["name"], c.change) for c in later) == [
        ("new", "added"), ("pkg2", "modified"), ("pkg3", "removed")
    ]  # fmt: skip


# Results ----------------------------------------------------------------------------------


def test_results_keep_every_change_with_its_evidence(store: SqliteStore) -> None:
    host = _host(store)
    check = "test.check"
    first = store.save_results(host.id, [_result(host, check, Status.PASS)], T0)
    unchanged = store.save_results(
        host.id, [_result(host, check, Status.PASS)], T0 + timedelta(minutes=1)
    )
    evidence = [{"username": "toor"}]
    flip = store.save_results(
        host.id, [_result(host, check, Status.FAIL, evidence)], T0 + timedelta(minutes=2)
    )
    assert first == [(check, None, Status.PASS)]
    assert unchanged == []
    assert flip == [(check, Status.PASS, Status.FAIL)]
    (latest,) = store.results_for(host.id)
    assert latest.status is Status.FAIL and latest.evidence == tuple(evidence)
    assert latest.changed_at == T0 + timedelta(minutes=2)
    transitions = store.transitions_for(host.id)
    assert [(t["old_status"], t["new_status"]) for t in transitions] == [
        (None, "pass"),
        ("pass", "fail"),
    ]
    as_of = store.results_as_of(T0 + timedelta(minutes=1), {host.id})
    assert [(r.check_id, r.status) for r in as_of] == [(check, Status.PASS)]
    assert store.results_as_of(T0 + timedelta(minutes=3), None)[0].evidence == tuple(evidence)


def test_packs_are_recorded_once_per_digest(store: SqliteStore) -> None:
    packs = load_packs(ROOT / "policies")
    store.record_packs(packs, T0)
    store.record_packs(packs, T0 + timedelta(days=1))
    rows = store.conn.execute("SELECT name, sha256 FROM policy_packs ORDER BY name").fetchall()
    assert [tuple(row) for row in rows] == sorted((p.name, p.sha256) for p in packs)


# Drift and the outbox ---------------------------------------------------------------------


def test_configuration_drift_against_the_baseline_is_queued_once(store: SqliteStore) -> None:
    store.notify_events = True
    host = _host(store)
    store.apply_batch(host.id, _batch(1, users=ROOT_ONLY), T0)  # the baseline
    later = T0 + timedelta(minutes=5)
    store.apply_batch(host.id, _batch(2, later, users=WITH_TOOR), later)
    store.apply_batch(host.id, _batch(2, later, users=WITH_TOOR), later)  # resent: nothing
    events = store.drift_events(EventFilter(host_ids=frozenset({host.id})))
    assert [(e.event.kind, e.event.type, e.event.view) for e in events] == [
        (EventKind.CONFIG, EventType.ADDED, "users")
    ]
    assert json.loads(events[0].event.identity) == ["toor"] or "toor" in events[0].event.identity
    assert store.drift_events(EventFilter(host_ids=frozenset({host.id + 1}))) == []
    pending = store.pending_notifications(later)
    assert [p.event.id for p in pending] == [events[0].id] and pending[0].attempts == 0
    store.mark_failed(events[0].id, "HTTP 503", later + timedelta(seconds=2))
    assert store.pending_notifications(later + timedelta(seconds=1)) == []
    store.mark_delivered(events[0].id, later + timedelta(seconds=3))
    assert store.pending_notifications(later + timedelta(days=1)) == []
    attempts, delivered, error = store.outbox_status()[events[0].id]
    assert (attempts, delivered, error) == (2, later + timedelta(seconds=3), "")


def test_approving_the_baseline_clears_the_deviation(store: SqliteStore) -> None:
    host = _host(store)
    store.apply_batch(host.id, _batch(1, users=ROOT_ONLY), T0)
    store.apply_batch(host.id, _batch(2, users=WITH_TOOR), T0 + timedelta(minutes=1))
    assert [e.type for e in store.baseline_deviations(host.id)] == [EventType.ADDED]
    views = store.approve_baseline(host.id, "alice", T0 + timedelta(minutes=2))
    assert views >= 1
    assert store.baseline_deviations(host.id) == []
    assert store.baseline_set_at(host.id)["users"][1] == "alice"


# Groups, waivers, reports -----------------------------------------------------------------


def test_group_rules_are_added_and_ended_never_edited(store: SqliteStore) -> None:
    rule = store.add_group_rule("police", "pd-*", "alice", T0)
    assert store.delete_group_rule(rule.id, "bob", T0 + timedelta(hours=1))
    assert not store.delete_group_rule(rule.id, "bob", T0 + timedelta(hours=2))
    (kept,) = store.group_rules()
    assert isinstance(kept, GroupRule)
    assert (kept.group, kept.deleted_by, kept.deleted_at) == (
        "police",
        "bob",
        T0 + timedelta(hours=1),
    )


def test_a_waiver_needs_a_second_person_and_is_revoked_once(store: SqliteStore) -> None:
    host = _host(store)
    requested = Waiver(
        0, "test.check", WaiverScope.HOST, host.id, None, "legacy scanner", "TCK-1",
        "isolated VLAN", "alice", T0, T0 + timedelta(days=30),
    )  # fmt: skip
    waiver = store.create_waiver(requested)
    assert not store.approve_waiver(waiver.id, "alice", T0)  # not by the requester
    assert store.approve_waiver(waiver.id, "bob", T0 + timedelta(hours=1))
    assert not store.approve_waiver(waiver.id, "carol", T0 + timedelta(hours=2))
    assert store.revoke_waiver(waiver.id, "carol", "fixed", T0 + timedelta(hours=3))
    assert not store.revoke_waiver(waiver.id, "carol", "again", T0 + timedelta(hours=4))
    stored = store.get_waiver(waiver.id)
    assert stored is not None and stored.approved_by == "bob" and stored.revoke_reason == "fixed"
    assert [w.id for w in store.list_waivers()] == [waiver.id]


def test_issued_reports_are_found_by_digest(store: SqliteStore) -> None:
    report = IssuedReport("a" * 64, "b" * 64, "json", T0, T0, {"group": "police"}, "alice")
    store.record_issued_report(report)
    assert store.issued_reports("a" * 64) == [report]
    assert store.issued_reports("c" * 64) == []


# History, the seal, compaction --------------------------------------------------------------


def test_a_write_after_a_seal_is_stamped_after_it(store: SqliteStore) -> None:
    host = _host(store)
    sealed = store.seal(T0 + timedelta(hours=1))
    store.save_results(host.id, [_result(host, "test.check", Status.PASS)], T0)
    (latest,) = store.results_for(host.id)
    assert latest.evaluated_at > sealed
    assert store.results_as_of(sealed, {host.id}) == []


def test_history_reads_as_of_an_instant_and_survives_compaction(store: SqliteStore) -> None:
    host = _host(store)
    times = [T0 + timedelta(days=day) for day in range(4)]
    for seq, (at, users) in enumerate(zip(times, (ROOT_ONLY, WITH_TOOR, ROOT_ONLY, WITH_TOOR),
                                          strict=True), start=1):  # fmt: skip
        store.apply_batch(host.id, _batch(seq, at, users=users), at)
        status = Status.PASS if users is ROOT_ONLY else Status.FAIL
        store.save_results(host.id, [_result(host, "test.check", status)], at)
    before = {
        at: (store.view_state_as_of(host.id, "users", at), store.results_as_of(at, {host.id}))
        for at in times[2:]
    }
    deleted = store.compact_history(times[2], [host.id])
    assert deleted > 0
    assert store.history_floor() == times[2]
    for at, (state, results) in before.items():
        assert store.view_state_as_of(host.id, "users", at) == state
        assert store.results_as_of(at, {host.id}) == results
    assert store.apply_batch(host.id, _batch(1, users=ROOT_ONLY), times[3]).duplicate
    activity = store.host_activity_as_of(times[3], {host.id})[host.id]
    assert activity.last_collected_at == times[3] and activity.evaluated_at == times[3]
    changes = store.fact_changes(host.id, "users", since=times[3])
    assert [c.change for c in changes] == ["added"]


# Leases ------------------------------------------------------------------------------------


def test_a_held_lease_has_one_holder_until_it_expires(engine: Any) -> None:
    a, b = engine.open(), engine.open()
    try:
        minute = timedelta(minutes=1)
        assert a.hold_lease("outbox", "collector-a", T0, T0 + minute)
        assert not b.hold_lease("outbox", "collector-b", T0 + minute / 2, T0 + 2 * minute)
        assert a.hold_lease("outbox", "collector-a", T0 + minute / 2, T0 + 2 * minute)
        assert not b.hold_lease("outbox", "collector-b", T0 + minute, T0 + 3 * minute)
        assert b.hold_lease("outbox", "collector-b", T0 + 2 * minute, T0 + 3 * minute)
        lease = a.lease("outbox")
        assert lease is not None and (lease.holder, lease.runs) == ("collector-b", 2)
        assert b.release_lease("outbox", "collector-b", T0 + 2 * minute)
        assert a.hold_lease("outbox", "collector-a", T0 + 2 * minute, T0 + 3 * minute)
    finally:
        a.close()
        b.close()


def test_a_period_is_claimed_by_exactly_one_of_many_racing(engine: Any) -> None:
    stores = [engine.open() for _ in range(4)]
    try:
        day = timedelta(days=1)
        won: list[str] = []
        start = threading.Barrier(len(stores))

        def claim(store: SqliteStore, name: str) -> None:
            start.wait()
            if store.claim_period("retention", name, T0, T0 + day):
                won.append(name)

        threads = [
            threading.Thread(target=claim, args=(store, f"c{i}")) for i, store in enumerate(stores)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(won) == 1
        assert not stores[0].claim_period("retention", "c0", T0 + day / 2, T0 + 2 * day)
        assert stores[1].claim_period("retention", "c1", T0 + day, T0 + 2 * day)
    finally:
        for store in stores:
            store.close()


# Evaluation ---------------------------------------------------------------------------------


def test_the_service_ingests_evaluates_and_scores_on_every_engine(store: SqliteStore) -> None:
    packs = load_packs(ROOT / "policies")
    service = PostureService(store, packs, clock=lambda: T0)
    try:
        _, secret = service.create_enroll_secret("test")
        host = service.enroll(secret, _identity("pd-1")).host
        service.ingest(host, _batch(1, users=WITH_TOOR, listening_ports=SSH))
        results = {r.check_id: r for r in store.results_for(host.id)}
        root = results["city.linux.only-root-uid-0"]
        assert root.status is Status.FAIL
        assert [row["username"] for row in root.evidence] == ["root", "toor"]
        service.ingest(host, _batch(2, users=ROOT_ONLY))
        after = {r.check_id: r.status for r in store.results_for(host.id)}
        assert after["city.linux.only-root-uid-0"] is Status.PASS
        reported = store.get_host(host.id)
        assert reported is not None
        view = service.host_view(reported)
        assert not view.stale and view.score.passed >= 1
    finally:
        service.close()


def _fixtures() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "policies" / "city-baseline" / "fixtures").glob("*.json")):
        check, outcome = path.name.removesuffix(".json").rsplit(".", 1)
        data = json.loads(path.read_text())
        if data["platform"] == "linux" and "now" not in data:
            found.append((check, outcome, data["tables"]))
    return found


def test_evaluation_reads_the_stores_facts_with_the_same_verdicts(store: SqliteStore) -> None:
    """Every Linux fixture of the city baseline, one host each, evaluated through the
    store's fact source: the fixture's verdict on every engine."""
    pack = next(p for p in load_packs(ROOT / "policies") if p.name == "city-baseline")
    fixtures = _fixtures()
    hosts = {}
    for index, (check, outcome, tables) in enumerate(fixtures):
        host = _host(store, f"h{index}")
        store.apply_batch(host.id, _batch(1, **tables), T0)
        hosts[(check, outcome)] = host
    checks = {check.id: check for check in pack.checks}
    with Evaluator(store.fact_source(), list(checks.values())) as evaluator:
        for (check, outcome), host in hosts.items():
            status = {name: None for name in store.table_states(host.id)}
            results = evaluator.evaluate(host.id, "linux", status)
            verdict = {r.check_id: r.status for r in results}[check]
            assert verdict.value == outcome, (check, outcome, results)
    assert len(hosts) >= 10
