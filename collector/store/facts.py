"""The storage layout of current facts: one ``fact_<table>`` per catalogue table.

Policy evaluation reads these tables for one host at a time, so the layout is chosen for
that read (GOALS.md: index by host first):

- Each table is ``WITHOUT ROWID`` with the primary key ``(host_id, posture_row)``, so a host's
  rows sit together in the table's own B-tree and reading them is one range scan, however
  interleaved the hosts' reports were. ``posture_row`` is the row's position: the first
  report's rows in report order, then each later report's new rows after the last one
  (``apply_host_rows`` writes only what changed; rows that stay keep their place). It keeps
  duplicate rows apart and is not a catalogue column (``host_rows`` and the evaluator's
  views leave it out).
- Tables with a column checks look rows up by (``name``, or ``path``, ``id``: see
  ``lookup_column``) also get an index ``(host_id, <that column>)``, so ``name IN (...)`` on a
  host's 1,500 packages is a seek, not a scan. ``file_lines``' index also carries ``line``
  (``(host_id, path, line)``), so the checks that read a file's ~400 lines (login.defs)
  read them from the index alone (measured: 3.1 -> 2.1-2.6 ms per host for the shipped
  packs).
- SQLite's planner, without statistics, prefers scanning a host's rows by the primary key to
  using that index whenever the check needs other columns too. ``create_fact_tables``
  therefore records planner hints in ``sqlite_stat1`` (about 100 rows per host, 2 per host and
  lookup value, no skip-scan) for tables that have no statistics of their own; a real
  ``ANALYZE`` replaces them.

Measured on 1,000 hosts of ~1,700 rows and 100 checks (18 from ``policies/``): about 1.0-1.5 ms
per host with this layout, 3.4 ms without the hints, 4 ms with the primary key alone, and
4-6 ms for a rowid table indexed on ``host_id`` alone. The lookup indexes cost about a fifth
more time when storing a full snapshot (13.7 -> 16.9 ms for 1,700 rows).

Values are stored as the agent sent them, strings, and SQLite's column affinity types them:
"0" in an INTEGER column becomes 0, so ``uid = 0`` and ``uid = '0'`` both work as in
osquery. osquery sends "" for an unknown number; "" cannot become a number and stays "", so
``col = ''`` keeps working and numeric comparisons need no guard against it. (Affinity also
means "007" in an INTEGER column reads back as 7.)

On PostgreSQL (``collector.store.postgres``) the same tables hold every catalogue column as
text, the agent's strings untouched, keyed the same way, without the lookup indexes:
policies never query them there. Evaluation copies a host's rows into an in-memory SQLite
database made by ``create_fact_tables``, where the affinities above type them; so
``host_rows`` gives back the agent's exact strings on PostgreSQL ("007"), SQLite's typed
spelling on SQLite (7), and every check sees the same values on both.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protos.posture.v1.tables import TABLES

__all__ = [
    "ROW_COLUMN",
    "TableChange",
    "Values",
    "apply_host_rows",
    "as_dicts",
    "column_names",
    "create_fact_tables",
    "delete_host_rows",
    "fact_table_name",
    "fact_table_statements",
    "host_rows",
    "host_values",
    "insert_sql",
    "quoted",
    "replace_host_rows",
]

#: The column ordering a host's rows of one table; not part of the catalogue.
ROW_COLUMN = "posture_row"

#: One stored row: its catalogue columns' values in catalogue order, as text (integers
#: spelled as ``str`` spells them), None for NULL, and a float where SQLite stored a REAL
#: (a REAL column, or a non-integral number in an INTEGER one).
Values = tuple[Any, ...]

_COLUMNS: dict[str, tuple[str, ...]] = {}

#: Planner hints (see the module docstring): rows in a fact table, rows per host.
_HINT_ROWS = 100_000
_HINT_PER_HOST = 100

#: The column checks look rows up by, where it is not ``name``; see ``lookup_column``.
_LOOKUP_OVERRIDES = {
    "file": "path",
    "file_lines": "path",
    "hash": "path",
    "registry": "path",
    "systemd_units": "id",
}

#: Columns a lookup index carries after its lookup column, so checks read them from the
#: index alone: a file's ~400 lines without one table lookup per line (login.defs checks).
_COVERED = {"file_lines": ("line",)}
#: Lookup indexes an older schema created that a covering one replaced.
_SUPERSEDED_INDEXES = ("fact_file_lines_path",)


def fact_table_name(table: str) -> str:
    """The storage table for catalogue table ``table``: ``fact_users`` for ``users``."""
    return "fact_" + table


def quoted(name: str) -> str:
    """``name`` as an SQL identifier (both engines)."""
    return '"' + name.replace('"', '""') + '"'


def lookup_column(table: str) -> str | None:
    """The column checks usually pick ``table``'s rows by (``name = 'openssh-server'``,
    ``path = '/etc/ssh/sshd_config'``), indexed after ``host_id``; None for tables without
    one."""
    column = _LOOKUP_OVERRIDES.get(table, "name")
    return column if column in TABLES[table].column_names() else None


def create_fact_tables(conn: sqlite3.Connection) -> None:
    """Create every catalogue table's storage table and lookup index on SQLite
    (idempotent; does not commit).

    A catalogue that gained a table gets it on the next call; existing tables are left
    alone.
    """
    for statement in fact_table_statements(TABLES, typed=True):
        conn.execute(statement)
    _hint_planner(conn)
    for index in _SUPERSEDED_INDEXES:
        # Read first: every store open runs this, and a write would take the write lock.
        found = "SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = ?"
        if conn.execute(found, (index,)).fetchone():
            conn.execute(f"DROP INDEX {quoted(index)}")
            conn.execute("DELETE FROM sqlite_stat1 WHERE idx = ?", (index,))


def fact_table_statements(tables: Iterable[str], *, typed: bool, lookups: bool = True) -> list[str]:
    """``CREATE ... IF NOT EXISTS`` statements for ``tables``' storage tables and indexes.

    ``typed``: catalogue columns get their catalogue types (SQLite's affinities type the
    agent's strings); otherwise every catalogue column is TEXT, the strings stored as sent
    (PostgreSQL, whose evaluation copies them into a typed SQLite layout). ``lookups``
    adds the ``(host_id, lookup column)`` indexes policy SQL seeks by (SQLite, where
    policies query the store itself).
    """
    statements = []
    for name in tables:
        table = quoted(fact_table_name(name))
        columns = "".join(
            f", {quoted(c.name)} {c.sql_type if typed else 'TEXT'}" for c in TABLES[name].columns
        )
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            f"host_id INTEGER NOT NULL, {ROW_COLUMN} INTEGER NOT NULL{columns}, "
            f"PRIMARY KEY (host_id, {ROW_COLUMN})) WITHOUT ROWID"
        )
        lookup = lookup_column(name) if lookups else None
        if lookup is not None:
            index = quoted(_lookup_index(name, lookup))
            keys = ", ".join(quoted(c) for c in (lookup, *_COVERED.get(name, ())))
            statements.append(f"CREATE INDEX IF NOT EXISTS {index} ON {table} (host_id, {keys})")
    return statements


def _lookup_index(table: str, column: str) -> str:
    return "_".join((fact_table_name(table), column, *_COVERED.get(table, ())))


def _hint_planner(conn: sqlite3.Connection) -> None:
    """Statistics for tables without any: a host has ~100 rows, ~2 per lookup value."""
    conn.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 and analyses nothing else
    hints = []
    for name in TABLES:
        table = fact_table_name(name)
        hints.append((table, table, f"{_HINT_ROWS} {_HINT_PER_HOST} 1 noskipscan"))
        lookup = lookup_column(name)
        if lookup is not None:
            index = _lookup_index(name, lookup)
            covered = " 1" * len(_COVERED.get(name, ()))
            hints.append((table, index, f"{_HINT_ROWS} {_HINT_PER_HOST} 2{covered} noskipscan"))
    conn.executemany(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) SELECT ?1, ?2, ?3"
        " WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE tbl = ?1 AND idx = ?2)",
        hints,
    )


def insert_sql(table: str) -> str:
    """The INSERT of one row of ``table``: host id, position, catalogue columns."""
    return _insert_sql(table, column_names(table))


def replace_host_rows(
    conn: sqlite3.Connection, host_id: int, table: str, rows: Sequence[Mapping[str, str]]
) -> None:
    """Make ``host_id``'s rows of ``table`` equal to ``rows`` (the caller commits); see
    ``apply_host_rows``, which also says what changed."""
    apply_host_rows(conn, host_id, table, rows)


@dataclass(frozen=True)
class TableChange:
    """A host's rows of one table before and after a report, as stored (``Values`` over
    ``columns``, in storage order; every catalogue column not in ``columns`` is NULL in
    these rows). ``changed``: rows were removed or added."""

    columns: tuple[str, ...]
    before: list[Values]
    after: list[Values]
    changed: bool
    #: The columns the report filled: every stored row now has NULL in all the others
    #: (what the caller may remember and pass back as ``apply_host_rows``' ``held``).
    filled: tuple[str, ...] = ()


def apply_host_rows(
    conn: sqlite3.Connection,
    host_id: int,
    table: str,
    rows: Sequence[Mapping[str, str]],
    held: Collection[str] | None = None,
) -> TableChange:
    """Make ``host_id``'s rows of ``table`` equal to ``rows``, writing only the difference
    (the caller commits): stored rows the report no longer has are deleted by their
    position, reported rows not stored yet are inserted after the last position, and rows
    in both stay as they are. Reports mostly repeat what was stored (5 % of processes
    change between collections), so this writes a tenth of what replacing everything did.

    A reported row matches a stored one when every catalogue column's text equals the
    stored value's (``Values``; NULL for a column the row lacks), so a match is a row the
    store would have stored identically: an integer stored from "7" matches "7", but not
    "007" (which SQLite also stores as 7: such a row is rewritten, the same value again;
    a REAL is never matched, so always rewritten). Only the columns the report fills are
    read and compared (agents collect a few of a table's columns: 5 of the 39 of
    ``processes``), with one flag per stored row saying all the others are NULL; should
    a stored row have another column (the plan changed), every column is read instead.
    ``held``, when known, names the only columns the stored rows may fill (the previous
    change's ``filled``): if the report fills them all, the flag is not computed, which
    halves the read (34 ``IS NULL`` tests per ``processes`` row).

    Columns the catalogue does not know are ignored, so an agent one catalogue version
    ahead or behind still stores what both sides know. Raises KeyError for a table
    outside the catalogue.
    """
    filled = set().union(*rows)
    columns = tuple(column for column in column_names(table) if column in filled)
    filled_columns = columns
    if held is not None and filled.issuperset(held):
        before = _stored(conn, host_id, table, columns, flagged=False)
    else:
        before = _stored(conn, host_id, table, columns)
    if not all(row[-1] for row in before):  # a stored row has a column the report lacks
        columns = column_names(table)
        before = _stored(conn, host_id, table, columns)
    unmatched: dict[Values, list[int]] = {}
    for stored in before:
        unmatched.setdefault(stored[1:-1], []).append(stored[0])
    added = []
    for row in rows:
        reported = tuple(map(row.get, columns))
        positions = unmatched.get(reported)
        if positions:
            positions.pop()
        else:
            added.append(reported)
    removed = [position for positions in unmatched.values() for position in positions]
    values_before = [row[1:-1] for row in before]
    if not removed and not added:
        return TableChange(columns, values_before, values_before, False, filled_columns)
    _delete(conn, host_id, table, removed, len(before))
    first = before[-1][0] + 1 if before else 0
    conn.executemany(
        _insert_sql(table, columns),
        [(host_id, first + offset, *values) for offset, values in enumerate(added)],
    )
    gone = set(removed)
    kept = [row[1:-1] for row in before if row[0] not in gone]
    inserted = [row[1:-1] for row in _stored(conn, host_id, table, columns, first, flagged=False)]
    return TableChange(columns, values_before, kept + inserted, True, filled_columns)


def _stored(
    conn: sqlite3.Connection,
    host_id: int,
    table: str,
    columns: tuple[str, ...],
    from_position: int = 0,
    *,
    flagged: bool = True,
) -> list[tuple[Any, ...]]:
    """(position, *values of ``columns``, whether every other column is NULL) of the
    host's rows of ``table`` from ``from_position`` on (values as ``Values`` spells them).
    Unless ``flagged``, the flag is not computed and reads true."""
    typed = isinstance(conn, sqlite3.Connection)
    sql = _select_sql(table, columns, typed=typed, flagged=flagged)
    return conn.execute(sql, (host_id, from_position)).fetchall()


@functools.lru_cache(maxsize=1024)
def _select_sql(table: str, columns: tuple[str, ...], *, typed: bool, flagged: bool) -> str:
    """The SELECT of ``_stored`` (``columns`` in catalogue order, as ``column_names``
    gives them). On SQLite an INTEGER column's integers are read as text (SQLite converts
    them, which costs nothing next to doing it in Python per value); PostgreSQL's columns
    hold text already."""
    selected, others = [], []
    for column in TABLES[table].columns:
        name = quoted(column.name)
        if column.name not in columns:
            others.append(f"{name} IS NULL")
        elif typed and column.sql_type == "INTEGER":
            selected.append(
                f"CASE WHEN typeof({name}) = 'integer' THEN CAST({name} AS TEXT) ELSE {name} END"
            )
        else:
            selected.append(name)
    flag = f"({' AND '.join(others)})" if others and flagged else "1 = 1"
    return (
        f"SELECT {', '.join([ROW_COLUMN, *selected, flag])}"
        f" FROM {quoted(fact_table_name(table))}"
        f" WHERE host_id = ? AND {ROW_COLUMN} >= ? ORDER BY {ROW_COLUMN}"
    )


@functools.lru_cache(maxsize=1024)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """The INSERT of rows filling ``columns`` (the others stay NULL)."""
    names = ", ".join(["host_id", ROW_COLUMN, *map(quoted, columns)])
    marks = ", ".join("?" * (len(columns) + 2))
    return f"INSERT INTO {quoted(fact_table_name(table))} ({names}) VALUES ({marks})"


def _delete(
    conn: sqlite3.Connection, host_id: int, table: str, positions: list[int], held: int
) -> None:
    if not positions:
        return
    if len(positions) == held:
        delete_host_rows(conn, host_id, table)
        return
    conn.executemany(
        f"DELETE FROM {quoted(fact_table_name(table))} WHERE host_id = ? AND {ROW_COLUMN} = ?",
        [(host_id, position) for position in positions],
    )


def column_names(table: str) -> tuple[str, ...]:
    """``table``'s catalogue columns in catalogue order (KeyError outside the catalogue)."""
    return _COLUMNS.get(table) or _COLUMNS.setdefault(
        table, tuple(c.name for c in TABLES[table].columns)
    )


def host_values(conn: sqlite3.Connection, host_id: int, table: str) -> list[Values]:
    """``host_id``'s rows of ``table`` as stored: ``Values`` in catalogue column order."""
    return [row[1:-1] for row in _stored(conn, host_id, table, column_names(table))]


def as_dicts(columns: Sequence[str], values: Iterable[Values]) -> list[dict[str, str]]:
    """Stored value tuples as ``host_rows`` gives them: text, NULL columns left out."""
    return [
        {name: str(value) for name, value in zip(columns, row, strict=True) if value is not None}
        for row in values
    ]


def delete_host_rows(conn: sqlite3.Connection, host_id: int, table: str) -> None:
    """Delete ``host_id``'s rows of ``table`` (the caller commits)."""
    if table not in TABLES:
        raise KeyError(table)
    conn.execute(f"DELETE FROM {quoted(fact_table_name(table))} WHERE host_id = ?", (host_id,))


def host_rows(conn: sqlite3.Connection, host_id: int, table: str) -> list[dict[str, str]]:
    """``host_id``'s rows of ``table`` in storage order, catalogue columns only.

    Values come back as strings, as the agent sends them (numbers as SQLite typed them);
    NULL columns are left out of the row, so a stored row compares equal to the row the
    agent reported when the agent omitted those columns.
    """
    return as_dicts(column_names(table), host_values(conn, host_id, table))
