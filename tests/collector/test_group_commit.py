"""Group commit: batches that queue for the writer thread are stored with one commit.

A real service on a real SQLite file, the writer a real one-thread executor; the writer is
held busy (as a long evaluation or a slow fsync would hold it) while batches arrive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.delivery import StaleSpoolError
from collector.model import FactBatch, Host, HostIdentity, IngestOutcome, TableFacts
from collector.policy.loader import load_packs
from collector.service import PostureService
from collector.store import SqliteStore
from collector.transport.group_commit import GroupIngest

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROOT_ONLY = [{"uid": "0", "gid": "0", "username": "root", "shell": "/bin/bash"}]
WITH_TOOR = [*ROOT_ONLY, {"uid": "0", "gid": "0", "username": "toor", "shell": "/bin/sh"}]


class RecordingService(PostureService):
    """The real service, noting how many batches each commit stored."""

    groups: list[int]
    evaluations_to_fail = 0

    def evaluate_stored(self, stored: Sequence[tuple[Host, IngestOutcome]]) -> None:
        if self.evaluations_to_fail:  # as a locked or full disk would, after the commit
            self.evaluations_to_fail -= 1
            raise OSError("disk I/O error")
        super().evaluate_stored(stored)

    def store_batches(
        self, batches: Sequence[tuple[Host, FactBatch]]
    ) -> list[IngestOutcome | Exception]:
        self.groups.append(len(batches))
        return super().store_batches(batches)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RecordingService]:
    store = SqliteStore(tmp_path / "collector.db")
    service = RecordingService(store, load_packs(ROOT / "policies"), clock=lambda: T0)
    service.groups = []
    yield service
    service.close()
    store.close()


def _hosts(service: PostureService, count: int) -> list[Host]:
    _, secret = service.create_enroll_secret("test")
    return [
        service.enroll(secret, HostIdentity(f"u{n}", f"s{n}", f"pc-{n}", "linux", "12", "1")).host
        for n in range(count)
    ]


def _batch(seq: int, users: list[dict[str, str]], spool: str = "a" * 32) -> FactBatch:
    return FactBatch(
        seq, T0 + timedelta(minutes=seq), [TableFacts("users", users)], {}, spool_id=spool
    )


async def _writer_idle(worker: ThreadPoolExecutor) -> None:
    """Return once the writer thread has finished what it was doing (evaluations follow
    acks, in the same job)."""
    await asyncio.get_running_loop().run_in_executor(worker, lambda: None)


async def _ingest_while_busy(
    writer: GroupIngest, worker: ThreadPoolExecutor, batches: list[tuple[Host, FactBatch]]
) -> list[IngestOutcome | BaseException]:
    """Submit ``batches`` while the writer thread is busy, then let it go."""
    busy, release = threading.Event(), threading.Event()
    worker.submit(lambda: (busy.set(), release.wait(30)))
    await asyncio.to_thread(busy.wait, 30)
    tasks = [asyncio.ensure_future(writer.ingest(host, batch)) for host, batch in batches]
    await asyncio.sleep(0.05)  # every stream has handed its batch over
    release.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_batches_queued_together_are_stored_with_one_commit_and_evaluated(
    service: RecordingService,
) -> None:
    hosts = _hosts(service, 5)
    with ThreadPoolExecutor(max_workers=1) as worker:
        writer = GroupIngest(service, worker)
        first = await writer.ingest(hosts[0], _batch(1, ROOT_ONLY))  # an idle writer: at once
        batches = [(host, _batch(2 if host is hosts[0] else 1, WITH_TOOR)) for host in hosts]
        outcomes = await _ingest_while_busy(writer, worker, batches)
    assert not first.duplicate and service.groups == [1, 5]
    assert all(isinstance(o, IngestOutcome) and not o.duplicate for o in outcomes), outcomes
    for host in hosts:
        assert service.store.host_rows(host.id, "users") == WITH_TOOR
        result = {r.check_id: r.status.value for r in service.store.results_for(host.id)}
        assert result["city.linux.only-root-uid-0"] == "fail"  # evaluated after the commit


async def test_a_batch_that_fails_in_a_group_fails_alone(service: RecordingService) -> None:
    one, two = _hosts(service, 2)
    with ThreadPoolExecutor(max_workers=1) as worker:
        writer = GroupIngest(service, worker)
        await writer.ingest(one, _batch(1, ROOT_ONLY))
        await writer.ingest(one, _batch(1, ROOT_ONLY, spool="b" * 32))  # a new spool
        stale = _batch(2, WITH_TOOR)  # from the replaced spool "a"
        again = _batch(1, ROOT_ONLY, spool="b" * 32)
        outcomes = await _ingest_while_busy(
            writer, worker, [(one, stale), (two, _batch(1, WITH_TOOR)), (one, again)]
        )
    assert service.groups == [1, 1, 3]
    assert isinstance(outcomes[0], StaleSpoolError)
    assert isinstance(outcomes[1], IngestOutcome) and not outcomes[1].duplicate
    assert isinstance(outcomes[2], IngestOutcome) and outcomes[2].duplicate
    assert service.store.host_rows(one.id, "users") == ROOT_ONLY
    assert service.store.host_rows(two.id, "users") == WITH_TOOR


async def test_a_group_is_bounded_and_the_rest_follow_in_the_next(
    service: RecordingService,
) -> None:
    hosts = _hosts(service, 5)
    with ThreadPoolExecutor(max_workers=1) as worker:
        writer = GroupIngest(service, worker, max_group=2)
        batches = [(host, _batch(1, ROOT_ONLY)) for host in hosts]
        outcomes = await _ingest_while_busy(writer, worker, batches)
    assert service.groups == [2, 2, 1]
    assert [getattr(o, "duplicate", None) for o in outcomes] == [False] * 5


async def test_a_failed_commit_acknowledges_none_of_its_group(
    service: RecordingService, tmp_path: Path
) -> None:
    hosts = _hosts(service, 3)
    service.store.close()  # the database went away: the commit cannot happen
    with ThreadPoolExecutor(max_workers=1) as worker:
        writer = GroupIngest(service, worker)
        outcomes = await _ingest_while_busy(
            writer, worker, [(host, _batch(1, ROOT_ONLY)) for host in hosts]
        )
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    reopened = SqliteStore(tmp_path / "collector.db")
    try:
        assert all(reopened.stored_seqs(host.id) == [] for host in hosts)
    finally:
        reopened.close()


async def test_a_host_whose_evaluation_failed_is_evaluated_in_full_with_the_next_group(
    service: RecordingService,
) -> None:
    one, two = _hosts(service, 2)
    with ThreadPoolExecutor(max_workers=1) as worker:
        writer = GroupIngest(service, worker)
        await writer.ingest(one, _batch(1, ROOT_ONLY))
        await _writer_idle(worker)  # the ack precedes the evaluation: let it finish first
        service.evaluations_to_fail = 1
        acked = await writer.ingest(one, _batch(2, WITH_TOOR))  # stored, acked, not evaluated
        await _writer_idle(worker)
        status = {r.check_id: r.status.value for r in service.store.results_for(one.id)}
        assert not acked.duplicate and status["city.linux.only-root-uid-0"] == "pass"
        await writer.ingest(two, _batch(1, ROOT_ONLY))  # another host's batch, no users change
    status = {r.check_id: r.status.value for r in service.store.results_for(one.id)}
    assert status["city.linux.only-root-uid-0"] == "fail"
