"""The fact tables evaluation reads: layout, replacement semantics, typing by affinity."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store.facts import (
    ROW_COLUMN,
    apply_host_rows,
    column_names,
    create_fact_tables,
    delete_host_rows,
    fact_table_name,
    host_rows,
    lookup_column,
    replace_host_rows,
)
from protos.posture.v1.tables import TABLES


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "store.db")
    create_fact_tables(connection)
    connection.commit()
    yield connection
    connection.close()


def test_fact_table_name_prefixes_the_catalogue_name() -> None:
    assert fact_table_name("users") == "fact_users"


def test_every_catalogue_table_gets_host_id_and_its_typed_columns(
    conn: sqlite3.Connection,
) -> None:
    for name, schema in TABLES.items():
        info = conn.execute(f'PRAGMA table_info("{fact_table_name(name)}")').fetchall()
        columns = {row[1]: row[2] for row in info}
        expected = {column.name: column.sql_type for column in schema.columns}
        assert columns == {"host_id": "INTEGER", ROW_COLUMN: "INTEGER", **expected}


def test_creating_twice_keeps_the_rows(conn: sqlite3.Connection) -> None:
    replace_host_rows(conn, 1, "users", [{"uid": "0", "username": "root"}])
    create_fact_tables(conn)
    assert host_rows(conn, 1, "users") == [{"uid": "0", "username": "root"}]


def query_plan(conn: sqlite3.Connection, sql: str) -> str:
    return " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))


def test_a_hosts_rows_are_found_through_the_host_first_key(conn: sqlite3.Connection) -> None:
    plan = query_plan(conn, "SELECT * FROM fact_processes WHERE host_id = 7")
    assert "USING PRIMARY KEY (host_id=?)" in plan


@pytest.mark.parametrize(
    ("table", "column"),
    [("deb_packages", "name"), ("file_lines", "path"), ("systemd_units", "id"), ("users", None)],
)
def test_lookups_within_a_host_seek_the_lookup_index(
    conn: sqlite3.Connection, tmp_path: Path, table: str, column: str | None
) -> None:
    assert lookup_column(table) == column
    if column is None:
        return
    # Other columns are needed too: without the planner hints SQLite would scan the host's
    # rows instead. Statistics load with the schema, as in the evaluator's own connection.
    reader = sqlite3.connect(tmp_path / "store.db")
    sql = f"SELECT * FROM fact_{table} WHERE host_id = 7 AND {column} IN ('a', 'b')"
    covering = "_line" if table == "file_lines" else ""
    try:
        plan = query_plan(reader, sql)
        assert f"INDEX fact_{table}_{column}{covering} (host_id=? AND {column}=?)" in plan
    finally:
        reader.close()


def test_a_files_lines_are_read_from_the_index_alone(conn: sqlite3.Connection) -> None:
    sql = "SELECT line FROM fact_file_lines WHERE host_id = 7 AND path = '/etc/login.defs'"
    assert "COVERING INDEX fact_file_lines_path_line" in query_plan(conn, sql)


def test_an_older_stores_superseded_lookup_index_is_dropped(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX fact_file_lines_path ON fact_file_lines (host_id, path)")
    create_fact_tables(conn)
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
    assert "fact_file_lines_path" not in names and "fact_file_lines_path_line" in names


def test_planner_hints_never_replace_real_statistics(conn: sqlite3.Connection) -> None:
    replace_host_rows(conn, 1, "users", [{"uid": str(uid)} for uid in range(3)])
    conn.execute("ANALYZE fact_users")
    create_fact_tables(conn)
    stats = conn.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'fact_users'").fetchall()
    assert stats == [("3 3 1",)]
    hint = "SELECT stat FROM sqlite_stat1 WHERE idx = 'fact_deb_packages_name'"
    assert conn.execute(hint).fetchall() == [("100000 100 2 noskipscan",)]


def test_replace_swaps_only_that_hosts_rows(conn: sqlite3.Connection) -> None:
    replace_host_rows(conn, 1, "users", [{"uid": "0", "username": "root"}])
    replace_host_rows(conn, 2, "users", [{"uid": "1000", "username": "ana"}])
    replace_host_rows(conn, 1, "users", [{"uid": "1", "username": "daemon"}])
    assert host_rows(conn, 1, "users") == [{"uid": "1", "username": "daemon"}]
    assert host_rows(conn, 2, "users") == [{"uid": "1000", "username": "ana"}]


def test_rows_keep_report_order_and_duplicates(conn: sqlite3.Connection) -> None:
    rows = [{"path": "/etc/a", "line": "x"}, {"path": "/etc/a", "line": "x"}, {"path": "/b"}]
    replace_host_rows(conn, 3, "file_lines", rows)
    assert host_rows(conn, 3, "file_lines") == rows


def test_unknown_columns_are_ignored_and_missing_ones_stored_as_null(
    conn: sqlite3.Connection,
) -> None:
    replace_host_rows(conn, 1, "users", [{"username": "root", "password": "hunter2"}])
    row = conn.execute("SELECT uid, username FROM fact_users WHERE host_id = 1").fetchone()
    assert row == (None, "root")


def test_quoted_column_names_like_key_path_and_type_store_values(
    conn: sqlite3.Connection,
) -> None:
    row = {"key": "HKLM\\Software", "path": "HKLM\\Software\\x", "type": "REG_SZ", "data": "1"}
    replace_host_rows(conn, 1, "registry", [row])
    stored = conn.execute('SELECT "key", "path", "type" FROM fact_registry').fetchone()
    assert stored == ("HKLM\\Software", "HKLM\\Software\\x", "REG_SZ")


def test_affinity_types_numbers_and_keeps_empty_strings(conn: sqlite3.Connection) -> None:
    replace_host_rows(conn, 1, "users", [{"uid": "0", "username": "root"}, {"uid": ""}])
    typed = conn.execute("SELECT typeof(uid) FROM fact_users ORDER BY posture_row").fetchall()
    assert typed == [("integer",), ("text",)]
    assert conn.execute("SELECT count(*) FROM fact_users WHERE uid = 0").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM fact_users WHERE uid = ''").fetchone() == (1,)


def test_delete_removes_only_that_hosts_rows(conn: sqlite3.Connection) -> None:
    replace_host_rows(conn, 1, "processes", [{"pid": "1", "name": "init"}])
    replace_host_rows(conn, 2, "processes", [{"pid": "1", "name": "systemd"}])
    delete_host_rows(conn, 1, "processes")
    assert host_rows(conn, 1, "processes") == []
    assert host_rows(conn, 2, "processes") == [{"pid": "1", "name": "systemd"}]


def test_the_caller_owns_the_transaction(conn: sqlite3.Connection, tmp_path: Path) -> None:
    replace_host_rows(conn, 1, "users", [{"uid": "0"}])
    other = sqlite3.connect(tmp_path / "store.db", timeout=0)
    try:
        assert other.execute("SELECT count(*) FROM fact_users").fetchone() == (0,)
        conn.commit()
        assert other.execute("SELECT count(*) FROM fact_users").fetchone() == (1,)
    finally:
        other.close()


def test_tables_outside_the_catalogue_are_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(KeyError):
        replace_host_rows(conn, 1, "hosts", [{"id": "1"}])
    with pytest.raises(KeyError):
        delete_host_rows(conn, 1, "hosts; DROP TABLE fact_users")


# Applying a report's difference ----------------------------------------------------------


def _positions(conn: sqlite3.Connection, host_id: int, table: str) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT username, {ROW_COLUMN} FROM {fact_table_name(table)} WHERE host_id = ?",
        (host_id,),
    )
    return dict(rows.fetchall())


def test_a_report_writes_only_the_rows_that_changed(conn: sqlite3.Connection) -> None:
    root, daemon, ana = ({"uid": u, "username": n} for u, n in (("0", "root"), ("1", "daemon"),
                                                                  ("1000", "ana")))  # fmt: skip
    apply_host_rows(conn, 1, "users", [root, daemon, ana])
    before = _positions(conn, 1, "users")
    bob = {"uid": "1001", "username": "bob"}
    change = apply_host_rows(conn, 1, "users", [root, bob, ana])
    after = _positions(conn, 1, "users")
    assert after["root"] == before["root"] and after["ana"] == before["ana"]  # left in place
    assert "daemon" not in after and after["bob"] > max(before.values())
    assert change.changed and change.columns == ("uid", "username")
    assert sorted(change.after) == sorted([("0", "root"), ("1000", "ana"), ("1001", "bob")])
    assert sorted(change.before) == sorted([("0", "root"), ("1", "daemon"), ("1000", "ana")])
    assert host_rows(conn, 1, "users") == [root, ana, bob]  # kept rows first, new ones after


def test_an_identical_report_writes_nothing(conn: sqlite3.Connection) -> None:
    rows = [{"uid": "0", "username": "root"}, {"uid": "", "username": "nobody"}]
    apply_host_rows(conn, 1, "users", rows)
    writes = conn.total_changes
    change = apply_host_rows(conn, 1, "users", list(reversed(rows)))
    assert not change.changed and change.before == change.after
    assert conn.total_changes == writes


def test_duplicate_rows_are_matched_one_for_one(conn: sqlite3.Connection) -> None:
    line = {"path": "/etc/a", "line": "x"}
    other = {"path": "/etc/b", "line": "y"}
    apply_host_rows(conn, 1, "file_lines", [line, line, other])
    apply_host_rows(conn, 1, "file_lines", [line, other])
    assert host_rows(conn, 1, "file_lines") == [line, other]
    change = apply_host_rows(conn, 1, "file_lines", [line, line, line, other])
    assert change.changed and len(change.after) == 4
    assert host_rows(conn, 1, "file_lines") == [line, other, line, line]


def test_a_number_is_compared_as_sqlite_stores_it(conn: sqlite3.Connection) -> None:
    apply_host_rows(conn, 1, "users", [{"uid": "007", "username": "bond"}])
    assert host_rows(conn, 1, "users") == [{"uid": "7", "username": "bond"}]
    assert not apply_host_rows(conn, 1, "users", [{"uid": "7", "username": "bond"}]).changed
    # "007" is not the text SQLite gives back: the row is written again, the same value.
    again = apply_host_rows(conn, 1, "users", [{"uid": "007", "username": "bond"}])
    assert again.changed and again.after == [("7", "bond")]
    assert host_rows(conn, 1, "users") == [{"uid": "7", "username": "bond"}]


def test_a_real_number_is_never_taken_for_its_text(conn: sqlite3.Connection) -> None:
    app = {"bundle_identifier": "com.x", "last_opened_time": "1.5"}
    apply_host_rows(conn, 1, "apps", [app])
    change = apply_host_rows(conn, 1, "apps", [app])
    assert change.changed and change.after == change.before  # rewritten, equal
    assert host_rows(conn, 1, "apps") == [app]


def test_a_stored_column_the_report_no_longer_fills_is_compared_too(
    conn: sqlite3.Connection,
) -> None:
    apply_host_rows(conn, 1, "users", [{"uid": "0", "username": "root", "shell": "/bin/sh"}])
    change = apply_host_rows(conn, 1, "users", [{"uid": "0", "username": "root"}])
    assert change.changed
    assert host_rows(conn, 1, "users") == [{"uid": "0", "username": "root"}]
    assert change.columns == column_names("users")  # every column read for the comparison


def test_the_filled_columns_passed_back_as_held_give_the_same_outcome(
    conn: sqlite3.Connection,
) -> None:
    """``held`` only spares the read its NULL test: every outcome stays the same."""
    root = {"uid": "0", "username": "root"}
    first = apply_host_rows(conn, 1, "users", [root, {"uid": "1", "username": "daemon"}])
    assert first.filled == ("uid", "username")
    again = apply_host_rows(conn, 1, "users", [root], held=first.filled)
    assert again.changed and again.after == [("0", "root")]
    assert not apply_host_rows(conn, 1, "users", [root], held=again.filled).changed
    # the plan drops a column: held names it, the report does not fill it, so it is read
    shell = {**root, "shell": "/bin/sh"}
    widened = apply_host_rows(conn, 1, "users", [shell], held=again.filled)
    narrowed = apply_host_rows(conn, 1, "users", [root], held=widened.filled)
    assert narrowed.changed and narrowed.columns == column_names("users")
    assert host_rows(conn, 1, "users") == [root]


def test_an_empty_report_empties_the_table(conn: sqlite3.Connection) -> None:
    apply_host_rows(conn, 1, "users", [{"uid": "0"}, {"uid": "1"}])
    change = apply_host_rows(conn, 1, "users", [])
    assert change.changed and change.after == []
    assert host_rows(conn, 1, "users") == []
