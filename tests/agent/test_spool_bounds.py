"""The bounded spool: folding old batches forward, gap records, spool ids, corrupt files and
full disks, on real SQLite files (the full disk is a real RLIMIT_FSIZE in a child process)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import resource
import sqlite3
from pathlib import Path

import pytest

from agent.collect import Collection, TableResult
from agent.spool import Enrollment, Gap, Spool, SpoolFullError, SpoolLimits, merge_gaps

T0 = 1_700_000_000_000
MINUTE = 60_000


def _collection(**tables: list[dict[str, str]]) -> Collection:
    return Collection({name: TableResult(rows=rows) for name, rows in tables.items()})


def _replay(spool: Spool) -> dict[str, TableResult]:
    """The state a collector reaches by applying every pending batch in order."""
    state: dict[str, TableResult] = {}
    for batch in spool.pending(limit=10_000):
        state.update(batch.changed)
    return state


def _digests(state: dict[str, TableResult]) -> dict[str, str]:
    return Collection(state).digests()


def test_every_spool_has_a_random_id_that_every_batch_carries(tmp_path: Path) -> None:
    one, two = Spool(tmp_path / "a.db"), Spool(tmp_path / "b.db")
    assert len(one.spool_id) == 32 and one.spool_id != two.spool_id
    one.spool(_collection(users=[{"uid": "0"}]), T0, "v1")
    one.close()
    reopened = Spool(tmp_path / "a.db")
    assert reopened.spool_id == one.spool_id
    assert [batch.spool_id for batch in reopened.pending()] == [one.spool_id]


def test_over_its_byte_bound_the_spool_folds_the_oldest_batches_forward(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db", SpoolLimits(max_bytes=1500))
    # "users" changes only in the first batch, "groups" every time: after folding, the
    # first batch's users must ride on a later batch, and the last groups must survive.
    spool.spool(_collection(users=[{"uid": "0"}], groups=[{"gid": "x0"}]), T0, "v1")
    last = _collection(users=[{"uid": "0"}], groups=[{"gid": "x0"}])
    for n in range(1, 40):
        noise = "".join(f"{n * k:08x}" for k in range(1, 40))  # incompressible-ish
        last = _collection(users=[{"uid": "0"}], groups=[{"gid": f"x{n}", "name": noise}])
        spool.spool(last, T0 + n * MINUTE, "v1")

    pending = spool.pending(limit=1000)
    assert spool.spooled_bytes() <= 1500 or len(pending) == 1
    assert len(pending) < 40 and pending[-1].seq == 40
    assert _digests(_replay(spool)) == last.digests() == spool.last_digests()
    # One gap covering exactly the dropped seqs, with their collection times.
    gaps = pending[0].gaps
    dropped = 40 - len(pending)
    assert gaps == (Gap(1, dropped, dropped, T0, T0 + (dropped - 1) * MINUTE),)
    assert all(batch.gaps == () for batch in pending[1:])


def test_batches_older_than_the_age_bound_are_folded_but_never_the_newest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db", SpoolLimits(max_age_seconds=3600))
    for n in range(5):
        spool.spool(_collection(users=[{"uid": str(n)}]), T0 + n * 20 * MINUTE, "v1")
    # Collected at 0, 20, 40, 60, 80 minutes: at 80, those before 20 are over an hour old.
    assert [batch.seq for batch in spool.pending()] == [2, 3, 4, 5]
    assert spool.pending()[0].gaps == (Gap(1, 1, 1, T0, T0),)
    # Much later, everything is old, yet the newest batch stays with every dropped seq.
    spool.spool(_collection(users=[{"uid": "late"}]), T0 + 10 * 3600_000, "v1")
    (only,) = spool.pending()
    assert only.seq == 6 and only.changed["users"].rows == [{"uid": "late"}]
    assert only.gaps == (Gap(1, 5, 5, T0, T0 + 80 * MINUTE),)


def test_a_folded_batch_is_full_when_it_carries_every_table(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db", SpoolLimits(max_age_seconds=60))
    spool.spool(_collection(users=[{"uid": "0"}], groups=[{"gid": "0"}]), T0, "v1")
    spool.spool(_collection(users=[{"uid": "0"}], groups=[{"gid": "1"}]), T0 + MINUTE * 5, "v1")
    (batch,) = spool.pending()
    assert batch.full and set(batch.changed) == {"users", "groups"}


def test_merge_gaps_joins_adjacent_runs_and_keeps_never_spooled_apart() -> None:
    gaps = [Gap(5, 6, 2, 50, 60), Gap(1, 2, 2, 10, 20), Gap(3, 4, 2, 30, 40), Gap(9, 9, 1, 90, 90)]
    never = [Gap(0, 0, 1, 70, 70), Gap(0, 0, 2, 75, 80)]
    assert merge_gaps([*gaps, *never]) == (
        Gap(0, 0, 3, 70, 80),
        Gap(1, 6, 6, 10, 60),
        Gap(9, 9, 1, 90, 90),
    )


def test_spools_written_before_compression_still_read(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Spool(path).close()
    payload = {"changed": {"users": {"rows": [{"uid": "0"}], "error": ""}}, "digests": {},
               "plan_version": "v0", "full": False}  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO batches VALUES (7, ?, ?)", (T0, json.dumps(payload)))
    (batch,) = Spool(path).pending()
    assert batch.seq == 7 and batch.changed["users"].rows == [{"uid": "0"}] and batch.gaps == ()


def _enrolled(path: Path) -> Spool:
    spool = Spool(path)
    spool.save_enrollment(Enrollment("127.0.0.1:1", "/ca.pem", "7", "secret"), '{"v": 1}')
    spool.spool(_collection(users=[{"uid": "0"}]), T0, "v1")
    return spool


def test_a_spool_that_is_not_a_database_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "agent.db"
    old = _enrolled(path)
    old.close()  # the last connection checkpoints: the header is in the file, not the WAL
    with path.open("r+b") as file:  # the header: nothing can be read any more
        file.write(b"this is not a SQLite file!" * 4)
    with caplog.at_level(logging.ERROR, "posture.agent"):
        spool = Spool(path)
    (aside,) = tmp_path.glob("agent.db.corrupt-*[0-9]Z")
    assert aside.read_bytes().startswith(b"this is not")
    assert "is corrupt" in caplog.text and str(aside) in caplog.text
    assert spool.spool_id != old.spool_id and spool.pending_count() == 0
    assert spool.enrollment() is None  # the header held everything: enroll again
    assert spool.spool(_collection(users=[]), T0, "v1")[0] == 1


def test_a_spool_with_a_corrupt_batch_page_keeps_its_enrollment(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    old = _enrolled(path)
    for n in range(30):  # enough batches for the batches table to span many pages
        old.spool(_collection(users=[{"uid": "x" * 3000 + str(n)}]), T0 + n, "v1")
    old.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = old.conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = old.conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'batches'"
    ).fetchone()
    old.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)

    spool = Spool(path)
    assert list(tmp_path.glob("agent.db.corrupt-*"))
    assert spool.enrollment() == Enrollment("127.0.0.1:1", "/ca.pem", "7", "secret")
    assert spool.get("plan") == '{"v": 1}'
    assert spool.spool_id != old.spool_id
    seq, changed = spool.spool(_collection(users=[{"uid": "0"}]), T0, "v1")
    assert (seq, changed) == (1, 1)  # seqs restart, and the first batch is whole


def _fill_under_file_size_limit(
    path: str, limit: int, queue: multiprocessing.Queue[object]
) -> None:
    """In a child: spool under RLIMIT_FSIZE until SQLite cannot write; report what happened."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    spool = Spool(Path(path))
    outcomes: list[str] = []
    for n in range(200):
        rows = [{"uid": f"{n}-{k}", "name": f"{n * k:064x}"} for k in range(60)]
        try:
            spool.spool(_collection(users=rows, groups=[{"gid": "0"}]), T0 + n * MINUTE, "v1")
            outcomes.append("ok")
        except SpoolFullError:
            outcomes.append("full")
    pending = spool.pending(limit=1000)
    queue.put((outcomes, [b.seq for b in pending], [b.gaps for b in pending[:1]]))


def test_on_a_full_disk_the_spool_drops_intermediate_states_and_keeps_collecting(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(
        target=_fill_under_file_size_limit, args=(str(tmp_path / "agent.db"), 256 * 1024, queue)
    )
    child.start()
    outcomes, seqs, first_gaps = queue.get(timeout=120)  # type: ignore[misc]
    child.join(timeout=60)
    assert child.exitcode == 0
    assert outcomes.count("ok") > 100  # it made room rather than stopping
    assert seqs[-1] == outcomes.count("ok")  # the newest collection is spooled
    assert len(seqs) < 100  # intermediate states were dropped to fit under 256 KB
    assert first_gaps[0] and first_gaps[0][0].first_seq == 1


def test_closing_waits_for_the_operation_in_progress_in_another_thread(tmp_path: Path) -> None:
    """The daemon closes its spool while a worker thread may still be spooling (a restart
    over the resource cap): that must end the worker with an error, never crash SQLite."""
    import threading

    spool = Spool(tmp_path / "agent.db")
    outcome: list[BaseException] = []
    started = threading.Event()

    def keep_spooling() -> None:
        try:
            for n in range(100_000):
                spool.spool(_collection(users=[{"uid": str(n)}]), T0 + n, "v1")
                started.set()
        except sqlite3.ProgrammingError as error:
            outcome.append(error)

    worker = threading.Thread(target=keep_spooling)
    worker.start()
    started.wait(timeout=30)
    spool.close()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert outcome and "closed" in str(outcome[0])
    reopened = Spool(tmp_path / "agent.db")
    seqs = [batch.seq for batch in reopened.pending(limit=100_000)]
    assert seqs == list(range(1, len(seqs) + 1))  # every spooled batch is whole and in order
