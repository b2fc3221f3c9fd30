"""The storage layout of current facts: one ``fact_<table>`` per catalogue table.

Policy evaluation reads these tables for one host at a time, so the layout is chosen for
that read (GOALS.md: index by host first):

- Each table is ``WITHOUT ROWID`` with the primary key ``(host_id, posture_row)``, so a host's
  rows sit together in the table's own B-tree and reading them is one range scan, however
  interleaved the hosts' reports were. ``posture_row`` is the row's position in the report;
  it keeps duplicate rows apart and is not a catalogue column (``host_rows`` and the
  evaluator's views leave it out).
- Tables with a column checks look rows up by (``name``, or ``path``, ``id``: see
  ``lookup_column``) also get an index ``(host_id, <that column>)``, so ``name IN (...)`` on a
  host's 1,500 packages is a seek, not a scan.
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

import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from protos.posture.v1.tables import TABLES

__all__ = [
    "ROW_COLUMN",
    "create_fact_tables",
    "delete_host_rows",
    "fact_table_name",
    "fact_table_statements",
    "host_rows",
    "insert_sql",
    "quoted",
    "replace_host_rows",
]

#: The column ordering a host's rows of one table; not part of the catalogue.
ROW_COLUMN = "posture_row"

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
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {index} ON {table} (host_id, {quoted(lookup)})"
            )
    return statements


def _lookup_index(table: str, column: str) -> str:
    return f"{fact_table_name(table)}_{column}"


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
            hints.append((table, index, f"{_HINT_ROWS} {_HINT_PER_HOST} 2 noskipscan"))
    conn.executemany(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) SELECT ?1, ?2, ?3"
        " WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE tbl = ?1 AND idx = ?2)",
        hints,
    )


def insert_sql(table: str) -> str:
    """The INSERT of one row of ``table``: host id, position, catalogue columns."""
    columns = [c.name for c in TABLES[table].columns]
    names = ", ".join(["host_id", ROW_COLUMN, *map(quoted, columns)])
    marks = ", ".join("?" * (len(columns) + 2))
    return f"INSERT INTO {quoted(fact_table_name(table))} ({names}) VALUES ({marks})"


def replace_host_rows(
    conn: sqlite3.Connection, host_id: int, table: str, rows: Sequence[Mapping[str, str]]
) -> None:
    """Replace ``host_id``'s rows of ``table`` with ``rows`` (the caller commits).

    Columns the catalogue does not know are ignored and missing ones are stored as NULL, so
    an agent one catalogue version ahead or behind still stores what both sides know.
    Raises KeyError for a table outside the catalogue.
    """
    columns = [c.name for c in TABLES[table].columns]
    delete_host_rows(conn, host_id, table)
    conn.executemany(
        insert_sql(table),
        [
            (host_id, position, *[row.get(column) for column in columns])
            for position, row in enumerate(rows)
        ],
    )


def delete_host_rows(conn: sqlite3.Connection, host_id: int, table: str) -> None:
    """Delete ``host_id``'s rows of ``table`` (the caller commits)."""
    if table not in TABLES:
        raise KeyError(table)
    conn.execute(f"DELETE FROM {quoted(fact_table_name(table))} WHERE host_id = ?", (host_id,))


def host_rows(conn: sqlite3.Connection, host_id: int, table: str) -> list[dict[str, str]]:
    """``host_id``'s rows of ``table`` in report order, catalogue columns only.

    Values come back as strings, as the agent sends them (numbers as SQLite typed them);
    NULL columns are left out of the row, so a stored row compares equal to the row the
    agent reported when the agent omitted those columns.
    """
    columns = [c.name for c in TABLES[table].columns]
    cursor = conn.execute(
        f"SELECT {', '.join(map(quoted, columns))} FROM {quoted(fact_table_name(table))} "
        f"WHERE host_id = ? ORDER BY {ROW_COLUMN}",
        (host_id,),
    )
    return [
        {name: str(value) for name, value in zip(columns, row, strict=True) if value is not None}
        for row in cursor
    ]
