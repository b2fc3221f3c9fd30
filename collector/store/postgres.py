"""PostgreSQL storage: the same store, its mixins unchanged, over a psycopg 3 connection pool.

The mixins talk to ``self.conn`` as to a ``sqlite3.Connection`` in autocommit mode
(``isolation_level=None``): ``execute``/``executemany`` with ``?`` placeholders, explicit
``BEGIN IMMEDIATE``/``COMMIT``/``ROLLBACK``, cursors of tuples with ``rowcount`` and
``lastrowid``. ``PgConnection`` offers exactly that over a pool, so the storage contract is
one set of methods, written once, tested on both engines:

- Each statement is translated (``collector.store.dialect``) and its result read in full
  before the pooled connection goes back (results are per host or per report: small).
- A ``BEGIN`` borrows one pooled connection for the calling thread until ``COMMIT`` or
  ``ROLLBACK``; statements of that thread in between run on it. ``BEGIN IMMEDIATE`` (a
  write) is READ COMMITTED holding the *seal lock* shared; ``BEGIN EXCLUSIVE`` holds it
  exclusively; a plain ``BEGIN`` (a read snapshot) is REPEATABLE READ. The seal lock is a
  transaction-scoped advisory lock: on SQLite one writer at a time makes a report's seal
  (``collector.store.base``) wait for every write in flight; here writers share the lock,
  so they run side by side from any number of collectors, and the seal takes it alone.
- PostgreSQL's errors come out as subclasses of sqlite3's (``PgIntegrityError`` is an
  ``sqlite3.IntegrityError``), so a mixin's ``except sqlite3.IntegrityError`` holds on both.
- ``numeric`` results (``SUM``, ``AVG`` of integers) load as ``int`` or ``float``, as on
  SQLite, never ``Decimal``.

Schema: the same migrations as SQLite (``collector.store.schema``) run through
``PgDatabase``, the small part of sqlite-utils' ``Database`` they and the mixins use, and
are recorded in ``posture_migrations``; collectors starting together migrate one at a time
(each step holds the seal lock exclusively). Fact tables keep every catalogue column as
text, exactly as the agent sent it: evaluation copies a host's rows into an in-memory SQLite
database of the SQLite store's layout (``PgFactSource``), whose column affinities then type
them exactly as the SQLite store would have.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any, cast

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlite_utils import Database

from collector.policy.evaluate import FactSource
from collector.store.dialect import TableInfo, Translated, bind, split_script, translate
from collector.store.engine import StoreUnavailableError
from collector.store.facts import (
    ROW_COLUMN,
    create_fact_tables,
    fact_table_name,
    fact_table_statements,
    insert_sql,
    quoted,
)
from collector.store.schema import MIGRATIONS
from collector.store.sqlite import SqliteStore
from protos.posture.v1.tables import TABLES

__all__ = [
    "PgConnection",
    "PgCursor",
    "PgDatabase",
    "PgFactSource",
    "PgIntegrityError",
    "PgOperationalError",
    "PostgresStore",
    "StoreUnavailableError",
]

#: Advisory lock keys ("posture" in ASCII, then one more for the seal).
SEAL_LOCK = 0x706F7374757265
MIGRATIONS_TABLE = "posture_migrations"

_CONTROL = re.compile(
    r"^\s*(?P<verb>BEGIN|COMMIT|END|ROLLBACK)(?:\s+(?P<mode>DEFERRED|IMMEDIATE|EXCLUSIVE))?"
    r"(?:\s+TRANSACTION)?\s*;?\s*$",
    re.IGNORECASE,
)
_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock"
_BEGIN = {
    None: "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "DEFERRED": "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "IMMEDIATE": f"{_WRITE}_shared({SEAL_LOCK})",
    "EXCLUSIVE": f"{_WRITE}({SEAL_LOCK})",
}
_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)
#: A plain multi-row INSERT (no conflict clause, only placeholders) goes in as one COPY: the
#: same rows and constraints, a fraction of the round trips (a host's 1,500 packages).
_COPYABLE = re.compile(
    r'^\s*INSERT\s+INTO\s+(?P<table>"[^"]+"|\w+)\s*\((?P<columns>[^()]*)\)\s*'
    r"VALUES\s*\(\s*\?(?:\s*,\s*\?)*\s*\)\s*;?\s*$",
    re.IGNORECASE,
)
_COPY_FROM_ROWS = 8


class PgIntegrityError(sqlite3.IntegrityError):
    """A constraint refused a write on PostgreSQL (see ``__cause__`` for psycopg's error)."""


class PgOperationalError(sqlite3.OperationalError):
    """Any other PostgreSQL error (see ``__cause__``)."""


def _translate_error(error: psycopg.Error) -> sqlite3.Error:
    text = str(error).strip()
    if isinstance(error, psycopg.IntegrityError):
        return PgIntegrityError(text)
    return PgOperationalError(text)


class _NumberLoader(Loader):
    """``numeric`` as ``int`` when whole, else ``float`` (what SQLite gives for the same SQL)."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _NumberLoader)


class PgCursor:
    """A statement's result, read in full: the part of ``sqlite3.Cursor`` the store uses."""

    def __init__(
        self,
        rows: list[tuple[Any, ...]],
        description: Sequence[tuple[str, ...]] | None,
        rowcount: int,
        lastrowid: int | None,
    ) -> None:
        self._rows = rows
        self._next = 0
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        chunk = self._rows[self._next : self._next + size]
        self._next += len(chunk)
        return chunk

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.fetchmany(len(self._rows))

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []


class PgConnection:
    """``sqlite3.Connection``'s autocommit behaviour over a psycopg 3 pool (module docstring).

    Safe to share between threads: each thread's transaction has a connection of its own.
    """

    def __init__(self, url: str, *, pool_size: int = 8, timeout: float = 30.0) -> None:
        _check_reachable(url, timeout)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            timeout=timeout,
            name="posture-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {_safe(url)} within {timeout:g} s"
            ) from None
        self._local = threading.local()
        self._tables: dict[str, TableInfo] | None = None
        self._translations: dict[tuple[str, bool], Translated] = {}
        self._lock = threading.Lock()

    # sqlite3.Connection's surface ---------------------------------------------------------

    def execute(self, sql: str, parameters: Any = ()) -> PgCursor:
        control = _CONTROL.match(sql)
        if control:
            self._control(control["verb"].upper(), (control["mode"] or "").upper() or None)
            return PgCursor([], None, -1, None)
        translated = self._translated(sql, returning=True)
        cursor = self._run(lambda conn: _execute(conn, translated, parameters))
        if _DDL.match(sql):
            self._forget_catalog()
        return cursor

    def executemany(self, sql: str, seq_of_parameters: Any) -> PgCursor:
        translated = self._translated(sql, returning=False)
        batch = [bind(translated, params) for params in seq_of_parameters]
        if not batch:
            return PgCursor([], None, 0, None)
        copy = _COPYABLE.match(sql) if len(batch) >= _COPY_FROM_ROWS else None

        def run(conn: psycopg.Connection[Any]) -> PgCursor:
            with conn.cursor() as cursor:
                if copy is not None:
                    statement = f"COPY {copy['table']} ({copy['columns']}) FROM STDIN"
                    with cursor.copy(cast(Any, statement)) as rows:
                        for row in batch:
                            rows.write_row(cast(Any, row))
                    return PgCursor([], None, len(batch), None)
                cursor.executemany(cast(Any, translated.sql), cast(Any, batch))
                return PgCursor([], None, cursor.rowcount, None)

        return self._run(run)

    def executescript(self, script: str) -> None:
        for statement in split_script(script):
            self.execute(statement)

    def commit(self) -> None:
        """Nothing to do: outside ``BEGIN`` every statement commits on its own."""

    def close(self) -> None:
        self._pool.close()

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    # Reads for evaluation ------------------------------------------------------------------

    def snapshot_fetch(self, queries: Sequence[tuple[str, tuple[Any, ...]]]) -> list[list[Any]]:
        """Run ``queries`` (already in PostgreSQL's dialect) in one round trip, in one
        read-only snapshot, and return their rows."""
        with self._pool.connection() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    cursors = [conn.execute(cast(Any, sql), params) for sql, params in queries]
                    conn.execute("COMMIT")
                return [cursor.fetchall() for cursor in cursors]
            except psycopg.Error as error:
                raise _translate_error(error) from error

    # Transactions ----------------------------------------------------------------------------

    def _control(self, verb: str, mode: str | None) -> None:
        bound: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if verb == "BEGIN":
            if bound is not None:
                raise PgOperationalError("cannot start a transaction within a transaction")
            try:
                conn = self._pool.getconn()
            except psycopg.Error as error:  # the pool timed out: every connection is busy
                raise _translate_error(error) from error
            try:
                conn.execute(cast(Any, _BEGIN[mode]))
            except psycopg.Error as error:
                self._pool.putconn(conn)
                raise _translate_error(error) from error
            self._local.conn = conn
            return
        if bound is None:
            raise PgOperationalError(f"cannot {verb.lower()} - no transaction is active")
        self._local.conn = None
        try:
            bound.execute("ROLLBACK" if verb == "ROLLBACK" else "COMMIT")
        except psycopg.Error as error:
            raise _translate_error(error) from error
        finally:
            self._pool.putconn(bound)

    def _run(self, work: Any) -> PgCursor:
        bound = getattr(self._local, "conn", None)
        try:
            if bound is not None:
                return cast(PgCursor, work(bound))
            with self._pool.connection() as conn:
                return cast(PgCursor, work(conn))
        except psycopg.Error as error:
            raise _translate_error(error) from error

    # Translation and the catalogue ---------------------------------------------------------

    def _translated(self, sql: str, *, returning: bool) -> Translated:
        key = (sql, returning)
        found = self._translations.get(key)
        if found is None:
            found = translate(sql, self.table_info, returning=returning)
            self._translations[key] = found
        return found

    def table_info(self, name: str) -> TableInfo | None:
        """Columns, primary key and identity column of table ``name`` (lower case)."""
        tables = self._tables
        if tables is None or name not in tables:
            tables = self._load_catalog()
        return tables.get(name)

    def _forget_catalog(self) -> None:
        with self._lock:
            self._tables = None
            self._translations.clear()

    def _load_catalog(self) -> dict[str, TableInfo]:
        with self._lock:
            if self._tables is not None:
                return self._tables
            columns: dict[str, list[str]] = {}
            keys: dict[str, list[str]] = {}
            identity: dict[str, str] = {}
            with self._pool.connection() as conn:
                for table, column, is_identity in conn.execute(_CATALOG_COLUMNS):
                    columns.setdefault(table, []).append(column)
                    if is_identity == "YES":
                        identity[table] = column
                for table, column in conn.execute(_CATALOG_KEYS):
                    keys.setdefault(table, []).append(column)
            self._tables = {
                table: TableInfo(tuple(names), tuple(keys.get(table, ())), identity.get(table))
                for table, names in columns.items()
            }
            return self._tables


_CATALOG_COLUMNS = (
    "SELECT table_name, column_name, is_identity FROM information_schema.columns"
    " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
)
_CATALOG_KEYS = (
    "SELECT tc.table_name, k.column_name FROM information_schema.table_constraints tc"
    " JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name"
    " AND k.table_schema = tc.table_schema AND k.table_name = tc.table_name"
    " WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()"
    " ORDER BY tc.table_name, k.ordinal_position"
)


def _execute(conn: psycopg.Connection[Any], translated: Translated, parameters: Any) -> PgCursor:
    with conn.cursor() as cursor:
        cursor.execute(cast(Any, translated.sql), cast(Any, bind(translated, parameters)))
        description = (
            [(column.name,) for column in cursor.description] if cursor.description else None
        )
        rows = cursor.fetchall() if cursor.description else []
        lastrowid = None
        if translated.returning is not None:
            lastrowid = rows[0][0] if rows else None
            rows, description = [], None
        return PgCursor(rows, description, cursor.rowcount, lastrowid)


def _check_reachable(url: str, timeout: float) -> None:
    """Connect once, so that a wrong password or a missing database is reported at once
    with PostgreSQL's reason, rather than as a pool that never fills."""
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True).close()
    except psycopg.Error as error:
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise StoreUnavailableError(f"cannot open PostgreSQL at {_safe(url)}: {reason}") from None


def _safe(url: str) -> str:
    """``url`` without a password, for messages."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


class _PgTable:
    """The part of sqlite-utils' ``Table`` the store uses: ``rows_where`` and counts."""

    def __init__(self, conn: PgConnection, name: str) -> None:
        self._conn = conn
        self.name = name

    def rows_where(
        self,
        where: str | None = None,
        where_args: Sequence[Any] | Mapping[str, Any] | None = None,
        order_by: str | None = None,
        select: str = "*",
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        sql = f"SELECT {select} FROM {quoted(self.name)}"
        if where is not None:
            sql += f" WHERE {where}"
        if order_by is not None:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset is not None:
            sql += f" OFFSET {int(offset)}"
        cursor = self._conn.execute(sql, where_args or ())
        names = [column[0] for column in cursor.description or ()]
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    def count_where(self, where: str | None = None, where_args: Sequence[Any] | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM {quoted(self.name)}"
        if where is not None:
            sql += f" WHERE {where}"
        row = self._conn.execute(sql, where_args or ()).fetchone()
        return int(row[0]) if row else 0

    @property
    def count(self) -> int:
        return self.count_where()

    def exists(self) -> bool:
        return self._conn.table_info(self.name.lower()) is not None


class PgDatabase:
    """The part of sqlite-utils' ``Database`` the migrations and mixins use."""

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Any = ()) -> PgCursor:
        return self.conn.execute(sql, parameters)

    def executescript(self, script: str) -> None:
        self.conn.executescript(script)

    def __getitem__(self, name: str) -> _PgTable:
        return _PgTable(self.conn, name)

    def table_names(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() ORDER BY table_name"
        )
        return [name for (name,) in rows]


def migrate_postgres(db: PgDatabase, migration_set: str = "posture") -> list[str]:
    """Run the pending migrations and create missing fact tables; returns what ran.

    Each step runs in its own transaction with its record, holding the seal lock
    exclusively, so collectors starting together migrate one after the other.
    """
    conn = db.conn
    conn.execute("BEGIN EXCLUSIVE")
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (migration_set TEXT NOT NULL,"
            " name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT (now()::text),"
            " PRIMARY KEY (migration_set, name))"
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    ran = []
    for name, step in MIGRATIONS:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            done = conn.execute(
                f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE migration_set = ? AND name = ?",
                (migration_set, name),
            ).fetchone()
            if done is None:
                step(cast(Database, db))
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (migration_set, name) VALUES (?, ?)",
                    (migration_set, name),
                )
                ran.append(name)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    _create_fact_tables(conn)
    return ran


def _create_fact_tables(conn: PgConnection) -> None:
    existing = {
        name
        for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name LIKE 'fact?_%' ESCAPE '?'"
        )
    }
    missing = [name for name in TABLES if fact_table_name(name) not in existing]
    if not missing:
        return
    conn.execute("BEGIN EXCLUSIVE")
    try:
        for statement in fact_table_statements(missing, typed=False, lookups=False):
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class PgFactSource:
    """Evaluation's view of a host's facts on PostgreSQL: an in-memory SQLite database of
    the SQLite store's layout, loaded with the host's current rows of the tables the checks
    read, from one read-only snapshot, before each evaluation (``collector.policy.evaluate``).
    """

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn
        self._loaded: dict[int, set[str]] = {}

    def open(self, cached_statements: int) -> sqlite3.Connection:
        target = sqlite3.connect(
            ":memory:",
            check_same_thread=False,
            isolation_level=None,
            cached_statements=cached_statements,
        )
        create_fact_tables(target)
        return target

    def load(self, target: sqlite3.Connection, host_id: int, tables: Collection[str]) -> None:
        """Make ``target`` hold ``host_id``'s current rows of ``tables`` (and no other
        host's rows, so memory stays one host's worth)."""
        wanted = sorted(set(tables) & TABLES.keys())
        results = self._conn.snapshot_fetch([(_select_sql(t), (host_id,)) for t in wanted])
        held = self._loaded.pop(id(target), set())
        target.execute("BEGIN")
        try:
            for table in held | set(wanted):
                target.execute(f"DELETE FROM {quoted(fact_table_name(table))}")
            for table, rows in zip(wanted, results, strict=True):
                target.executemany(insert_sql(table), rows)
        except BaseException:
            target.execute("ROLLBACK")
            raise
        target.execute("COMMIT")
        self._loaded[id(target)] = set(wanted)


def _select_sql(table: str) -> str:
    columns = ", ".join(quoted(column.name) for column in TABLES[table].columns)
    return (
        f"SELECT host_id, {ROW_COLUMN}, {columns} FROM {quoted(fact_table_name(table))}"
        f" WHERE host_id = %s ORDER BY {ROW_COLUMN}"
    )


class PostgresStore(SqliteStore):
    """The collector's storage on PostgreSQL: every method of ``SqliteStore`` (its mixins
    are the storage contract), on ``PgConnection`` instead of a SQLite file.

    ``conn`` and ``db`` are typed as sqlite3's and sqlite-utils' (the mixins' annotations)
    but are ``PgConnection`` and ``PgDatabase``: only the surface those offer is portable.
    """

    engine = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        # Not SqliteStore.__init__: no file, no sqlite-utils; the mixins need only these.
        adapter = PgConnection(url, pool_size=pool_size)
        self.location = url
        self.pg = adapter
        self.conn = cast(sqlite3.Connection, adapter)
        self.db = cast(Database, PgDatabase(adapter))
        self.notify_events = False
        try:
            migrate_postgres(PgDatabase(adapter))
        except BaseException:
            adapter.close()
            raise

    def fact_source(self) -> FactSource:
        return PgFactSource(self.pg)

    def close(self) -> None:
        with suppress(psycopg.Error):
            self.pg.close()
