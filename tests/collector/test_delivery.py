"""Delivery epochs and gap records in the real SQLite store, and how people read them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.delivery import (
    StaleSpoolError,
    describe_gaps,
    gaps_as_json,
    host_delivery_json,
    host_delivery_lines,
)
from collector.model import DeliveryGap, FactBatch, HostIdentity, SpoolEpoch, TableFacts
from collector.service import PostureService
from collector.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
A, B = "a" * 32, "b" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "collector.db")
    service = PostureService(store, [], interval_seconds=300)
    _, secret = service.create_enroll_secret("test")
    identity = HostIdentity("uuid-1", "serial", "pc-17", "linux", "Debian 12", "0.1.0")
    assert service.enroll(secret, identity).host.id == 1
    yield store
    service.close()
    store.close()


def _batch(seq: int, spool_id: str, uid: str = "0", **extra: object) -> FactBatch:
    rows = [{"uid": uid, "username": f"user{uid}"}]
    return FactBatch(
        seq=seq,
        collected_at=T0 + timedelta(minutes=5 * seq),
        changed=[TableFacts("users", rows)],
        digests={"users": f"d-{uid}"},
        spool_id=spool_id,
        **extra,  # type: ignore[arg-type]
    )


def _users(store: SqliteStore) -> list[dict[str, str]]:
    return store.host_rows(1, "users")


def test_each_spool_seq_is_stored_once_and_redelivery_is_a_duplicate(store: SqliteStore) -> None:
    assert not store.apply_batch(1, _batch(1, A), T0).duplicate
    assert not store.apply_batch(1, _batch(2, A), T0).duplicate
    again = store.apply_batch(1, _batch(2, A, uid="changed"), T0)
    assert again.duplicate and again.seq == 2
    assert _users(store) == [{"uid": "0", "username": "user0"}]  # the redelivery changed nothing
    assert store.delivered(1) == [(A, 1), (A, 2)]


def test_a_new_spool_starts_a_new_epoch_and_its_low_seqs_are_stored(store: SqliteStore) -> None:
    for seq in (1, 2, 3):
        store.apply_batch(1, _batch(seq, A), T0)
    # The agent was reinstalled: a new spool starts again at 1.
    outcome = store.apply_batch(1, _batch(1, B, uid="1000"), T0 + timedelta(hours=1))
    assert not outcome.duplicate and outcome.seq == 1  # acked under the agent's own seq
    assert _users(store) == [{"uid": "1000", "username": "user1000"}]
    store.apply_batch(1, _batch(2, B, uid="1001"), T0)
    assert store.delivered(1) == [(A, 1), (A, 2), (A, 3), (B, 1), (B, 2)]
    assert store.stored_seqs(1) == [1, 2, 3, 4, 5]  # the host's seqs keep increasing
    assert store.apply_batch(1, _batch(1, B), T0).duplicate
    first, second = store.spool_epochs(1)
    assert (first.spool_id, first.base_seq, second.spool_id, second.base_seq) == (A, 0, B, 3)
    assert first.superseded_at == second.started_at == T0 + timedelta(hours=1)


def test_a_late_batch_from_a_replaced_spool_is_refused_and_stores_nothing(
    store: SqliteStore,
) -> None:
    store.apply_batch(1, _batch(1, A), T0)
    store.apply_batch(1, _batch(1, B, uid="1000"), T0)
    with pytest.raises(StaleSpoolError, match="replaced") as refused:
        store.apply_batch(1, _batch(2, A, uid="5"), T0)
    assert "host 1: batch 2" in str(refused.value)
    assert _users(store) == [{"uid": "1000", "username": "user1000"}]
    assert store.delivered(1) == [(A, 1), (B, 1)]


def test_the_empty_spool_id_of_an_older_agent_is_adopted_by_its_first_real_one(
    store: SqliteStore,
) -> None:
    store.apply_batch(1, _batch(1, ""), T0)
    store.apply_batch(1, _batch(2, ""), T0)
    # The same spool, upgraded in place: seqs continue, redeliveries are still duplicates.
    assert store.apply_batch(1, _batch(2, A), T0).duplicate
    assert not store.apply_batch(1, _batch(3, A), T0).duplicate
    assert store.delivered(1) == [(A, 1), (A, 2), (A, 3)]
    assert [epoch.spool_id for epoch in store.spool_epochs(1)] == [A]


def test_the_database_refuses_a_second_row_for_one_spool_seq(store: SqliteStore) -> None:
    store.apply_batch(1, _batch(1, A), T0)
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO batches (host_id, seq, collected_at, received_at, tables_changed,"
            " spool_id, agent_seq) VALUES (1, 99, 'x', 'x', 0, ?, 1)",
            (A,),
        )


def _gap(first: int, last: int, count: int) -> DeliveryGap:
    return DeliveryGap(
        first, last, count, T0 + timedelta(minutes=5 * first), T0 + timedelta(minutes=5 * last)
    )


def test_gaps_are_stored_with_their_batch_minus_what_was_stored_anyway(store: SqliteStore) -> None:
    store.apply_batch(1, _batch(1, A), T0)
    store.apply_batch(1, _batch(2, A), T0)  # in flight when the spool dropped it
    store.apply_batch(1, _batch(9, A, gaps=[_gap(2, 8, 7)]), T0)
    assert store.delivery_gaps(1) == [
        DeliveryGap(2, 8, 6, T0 + timedelta(minutes=10), T0 + timedelta(minutes=40))
    ]
    # A redelivery of the batch records nothing twice.
    store.apply_batch(1, _batch(9, A, gaps=[_gap(2, 8, 7)]), T0)
    assert len(store.delivery_gaps(1)) == 1


def test_a_gap_whose_batches_all_arrived_is_not_recorded(store: SqliteStore) -> None:
    store.apply_batch(1, _batch(1, A), T0)
    store.apply_batch(1, _batch(2, A, gaps=[_gap(1, 1, 1)]), T0)
    assert store.delivery_gaps(1) == []


def test_collections_never_spooled_are_recorded_by_count(store: SqliteStore) -> None:
    never = DeliveryGap(0, 0, 4, T0, T0 + timedelta(minutes=15))
    store.apply_batch(1, _batch(1, A, gaps=[never]), T0)
    assert store.delivery_gaps(1) == [never]


def test_describe_gaps_says_how_many_batches_and_when() -> None:
    gaps = [
        _gap(2, 13, 12),
        DeliveryGap(0, 0, 1, T0 + timedelta(days=1), T0 + timedelta(days=1)),
    ]
    epochs = [
        SpoolEpoch(A, 0, T0, T0 + timedelta(hours=2)),
        SpoolEpoch(B, 40, T0 + timedelta(hours=2), None),
    ]
    assert describe_gaps("pc-17", gaps, epochs) == [
        "host pc-17: 12 batches dropped (agent spool full) between 2026-03-02 09:10:00 UTC"
        " and 2026-03-02 10:05:00 UTC",
        "host pc-17: agent spool replaced at 2026-03-02 11:00:00 UTC; seqs restarted"
        " (agent reinstalled, spool lost or found corrupt)",
        "host pc-17: 1 collection not spooled (agent disk full) at 2026-03-03 09:00:00 UTC",
    ]
    assert describe_gaps("pc-17", [], epochs[:1]) == []
    assert gaps_as_json(gaps[:1]) == [
        {
            "first_seq": 2,
            "last_seq": 13,
            "batches": 12,
            "first_collected_at": "2026-03-02T09:10:00+00:00",
            "last_collected_at": "2026-03-02T10:05:00+00:00",
            "kind": "dropped",
        }
    ]


def test_a_stored_hosts_delivery_reads_as_lines_and_json(store: SqliteStore) -> None:
    store.apply_batch(1, _batch(1, A), T0)
    store.apply_batch(1, _batch(5, A, gaps=[_gap(2, 4, 3)]), T0)
    store.apply_batch(1, _batch(1, B), T0 + timedelta(days=1))
    (host,) = store.list_hosts()
    assert host_delivery_lines(store, host) == [
        "host pc-17: 3 batches dropped (agent spool full) between 2026-03-02 09:10:00 UTC"
        " and 2026-03-02 09:20:00 UTC",
        "host pc-17: agent spool replaced at 2026-03-03 09:00:00 UTC; seqs restarted"
        " (agent reinstalled, spool lost or found corrupt)",
    ]
    record = host_delivery_json(store, host)
    assert record["spool_replaced_at"] == ["2026-03-03T09:00:00+00:00"]
    assert [gap["batches"] for gap in record["delivery_gaps"]] == [3]  # type: ignore[attr-defined]
