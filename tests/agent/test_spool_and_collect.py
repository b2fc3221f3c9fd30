"""The agent's spool and collection loop, on real SQLite files and real sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collect import Collection, TableResult, collect, table_digest
from agent.guard import ProbeBackoff
from agent.plan import CollectionPlan, PlanError, load_plan
from agent.sources.base import ProbeError, Row, TableRequest, platform_row
from agent.spool import Enrollment, Spool
from protos.posture.v1.tables import columns_for


def _collection(**tables: list[Row]) -> Collection:
    return Collection({name: TableResult(rows=rows) for name, rows in tables.items()})


def test_digest_ignores_row_and_key_order_but_not_values() -> None:
    a = TableResult([{"uid": "0", "username": "root"}, {"uid": "1", "username": "daemon"}])
    b = TableResult([{"username": "daemon", "uid": "1"}, {"username": "root", "uid": "0"}])
    c = TableResult([{"uid": "0", "username": "root"}, {"uid": "1", "username": "bin"}])
    assert table_digest(a) == table_digest(b) != table_digest(c)
    assert table_digest(TableResult(error="denied")) != table_digest(TableResult())


def test_spool_sends_only_changed_tables_and_always_all_digests(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db")
    first = _collection(users=[{"uid": "0"}], groups=[{"gid": "0"}])
    assert spool.spool(first, 1_700_000_000_000, "v1") == (1, 2)
    second = _collection(users=[{"uid": "0"}], groups=[{"gid": "0"}, {"gid": "27"}])
    assert spool.spool(second, 1_700_000_300_000, "v1") == (2, 1)
    assert spool.spool(second, 1_700_000_600_000, "v1") == (3, 0)

    one, two, three = spool.pending()
    assert one.full and set(one.changed) == {"users", "groups"}
    assert set(two.changed) == {"groups"} and not two.full
    assert two.changed["groups"].rows == [{"gid": "0"}, {"gid": "27"}]
    assert three.changed == {} and set(three.digests) == {"users", "groups"}


def test_spool_survives_reopening_and_deletes_only_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db")
    for at in range(3):
        spool.spool(_collection(users=[{"uid": str(at)}]), 1_700_000_000_000 + at, "v1")
    spool.acknowledge(2)
    spool.close()

    reopened = Spool(tmp_path / "agent.db")
    assert [batch.seq for batch in reopened.pending()] == [1, 3]
    assert [batch.seq for batch in reopened.pending(after_seq=1)] == [3]
    reopened.acknowledge(1)
    reopened.acknowledge(3)
    assert reopened.pending_count() == 0
    # Sequence numbers are never reused, even once the spool is empty.
    assert reopened.spool(_collection(users=[]), 1_700_000_000_010, "v1")[0] == 4


def test_spooled_collections_are_counted_behind_a_seq(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db")
    for at in range(4):
        tables = Collection({"users": TableResult([{"uid": str(at)}])})
        spool.spool(tables, 1_700_000_000_000 + at, "v1")
    spool.acknowledge(1)
    assert spool.pending_count() == 3
    assert spool.pending_count(after_seq=2) == 2


def test_forget_sent_makes_the_next_batch_carry_those_tables(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db")
    tables = _collection(users=[{"uid": "0"}], groups=[{"gid": "0"}])
    spool.spool(tables, 1_700_000_000_000, "v1")
    spool.forget_sent(["groups"])
    spool.spool(tables, 1_700_000_000_001, "v1")
    spool.forget_sent(None)
    spool.spool(tables, 1_700_000_000_002, "v1")
    _, resent, full = spool.pending()
    assert set(resent.changed) == {"groups"}
    assert full.full and set(full.changed) == {"users", "groups"}


def test_enrollment_is_kept_with_a_private_file_mode(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "agent.db")
    assert spool.enrollment() is None
    enrollment = Enrollment("127.0.0.1:1", "/ca.pem", "7", "secret-credential")
    spool.save_enrollment(enrollment, '{"tables": []}')
    assert Spool(tmp_path / "agent.db").enrollment() == enrollment
    assert (tmp_path / "agent.db").stat().st_mode & 0o077 == 0


class _Source:
    """A source with fixed answers, standing in for a platform this machine is not."""

    name = "recorded"

    def __init__(self, tables: dict[str, list[Row] | str]) -> None:
        self._tables = tables
        self.calls: list[str] = []

    def available(self) -> bool:
        return True

    def tables(self) -> frozenset[str]:
        return frozenset(self._tables)

    def collect(self, request: TableRequest) -> list[Row]:
        self.calls.append(request.name)
        answer = self._tables[request.name]
        if isinstance(answer, str):
            raise ProbeError(answer)
        return answer


def test_collect_projects_columns_and_reports_failures_as_errors() -> None:
    source = _Source({"users": [{"uid": "0", "username": "root", "shell": "/bin/sh"}],
                      "shadow": "permission denied"})  # fmt: skip
    plan = CollectionPlan("v", 300, (
        TableRequest("users", columns=("uid", "username")),
        TableRequest("shadow"),
        TableRequest("bitlocker_info"),
    ))  # fmt: skip
    tables = collect(plan, [source]).tables
    assert tables["users"].rows == [{"uid": "0", "username": "root"}]
    assert tables["shadow"].error == "recorded: permission denied"
    assert "no fact source" in tables["bitlocker_info"].error


def test_plan_files_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"version": "v", "interval_seconds": 60, "tables": [{"name": "users"}]}')
    assert load_plan(path).tables == (TableRequest("users"),)
    path.write_text('{"version": "v", "tables": "users"}')
    with pytest.raises(PlanError, match="not a collection plan"):
        load_plan(path)
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "missing.json")


def test_a_probe_that_keeps_failing_is_paused_and_reported_not_retried() -> None:
    source = _Source({"bitlocker_info": "timed out after 10 s", "users": []})
    plan = CollectionPlan("v", 300, (TableRequest("bitlocker_info"), TableRequest("users")))
    backoff = ProbeBackoff(threshold=2, first_pause_seconds=3600)
    results = [collect(plan, [source], backoff).tables for _ in range(4)]
    assert source.calls.count("bitlocker_info") == 2
    assert source.calls.count("users") == 4
    assert results[0]["bitlocker_info"].error == "recorded: timed out after 10 s"
    paused = results[3]["bitlocker_info"].error
    assert "paused after 2 failures" in paused and "timed out" in paused
    assert table_digest(results[2]["bitlocker_info"]) == table_digest(results[3]["bitlocker_info"])


def test_platform_rows_have_exactly_the_catalogue_columns() -> None:
    row = platform_row("users", "linux", {"uid": "0", "username": "root"})
    assert tuple(row) == columns_for("users", "linux") and row["shell"] == ""
    assert "is_hidden" in platform_row("users", "darwin", {})  # a macOS-only column
    with pytest.raises(KeyError, match="no linux column"):
        platform_row("users", "linux", {"is_hidden": "0"})
