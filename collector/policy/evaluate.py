"""Evaluate checks for one host against the shared fact store, in a sandbox.

The evaluator reads facts through a ``FactSource``: a SQLite database whose ``main.fact_<t>``
tables hold the store's facts. On the SQLite engine that is the collector's own file, opened
read-only (WAL mode, so the ingest connection keeps writing meanwhile), and nothing needs
loading. On PostgreSQL (``collector.store.postgres.PgFactSource``) it is an in-memory SQLite
database of the same layout into which the host's current rows of the tables the checks read
are copied before each evaluation: the same SQL, the same sandbox and the same SQLite
typing, whichever engine stores the facts. The evaluator gives policy SQL the world osquery
gives it: TEMP views named like osquery's tables (``users``, ``file``...) that show only the
current host's rows of ``main.fact_<table>``. Fleet's SQL therefore runs unmodified, and a
check can never see another host: the views filter on ``host_id = posture_host_id()``, a SQL
function that returns the host being evaluated, read when a statement runs, so cached
prepared statements serve every host. (A one-row context table read by a subquery was the
other candidate: it costs the same for simple checks, but SQLite does not carry a subquery's
value into each branch of an OR, and a check with ``id IN (...) OR ...`` then scanned every
host's rows: 4 ms for one check instead of 0.02 ms.)

The sandbox (``collector.policy.sandbox``) is installed once and for good, because replacing
an authorizer expires every prepared statement: policy statements may only SELECT, read the
views and call whitelisted functions; the evaluator's own statements run while the sandbox is
``trusted``. Each check is audited once when the evaluator is built: its compiled program may
open only fact tables (SQLite skips the authorizer for tables joined only by ``USING``), and
its text may not name ``fact_*`` or ``sqlite_*`` (a CTE named ``users`` over
``main.fact_users`` would otherwise read every host). A progress handler stops runaway
statements (an unbounded recursive CTE) after a fixed number of SQLite VM steps.

All checks of one evaluation run in one read transaction, so a host's results describe one
consistent snapshot of its facts even while new facts are being committed, and share one
clock: ``posture_now()`` is the time the evaluation started (by the evaluator's ``clock``,
the wall clock unless a caller evaluating "as of" a date or replaying a fixture sets one),
whatever the checks take.

Shared applies: many checks share one ``applies`` statement (27 Linux checks apply where
dpkg is installed, 9 where the OpenSSH server is). Within one evaluation a statement gives
one answer (one snapshot, one host, one clock), so each distinct one runs once and its
verdict serves every check that names it: 59 statements became 17 per Linux host.

Scratch tables: the connection keeps SQLite's temporary B-trees in memory
(``temp_store = MEMORY``). Checks build many small ones (a CTE read twice is materialized,
``GROUP BY`` and ``ORDER BY`` sort, ``IN (SELECT ...)`` builds a lookup), and with the
default file-backed temp store each costs more to set up than to fill. Measured on a host
with an SSH server, whose SSH checks each materialize a parsed sshd_config: one such
statement alone took half the CPU, the host's full evaluation 10-15 % less (a host without
one: no measurable change). A runaway statement's rows now grow memory rather than a
temporary file; the VM-step budget bounds how many it makes.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from collector.policy.model import Check, CheckResult, Status
from collector.policy.sandbox import (
    Sandbox,
    harden,
    program_reads,
    register_clock,
    register_osquery_functions,
    root_pages,
)
from protos.posture.v1.tables import TABLES

__all__ = ["MAX_EVIDENCE_ROWS", "Evaluator", "FactSource", "FileFactSource"]

MAX_EVIDENCE_ROWS = 50
HOST_FUNCTION = "posture_host_id"
#: The store keeps catalogue table ``t`` in ``fact_<t>`` (``collector.store.facts``, which
#: this module does not import: it would pull the storage package into the domain).
FACT_PREFIX = "fact_"
_STEPS_PER_CALL = 1_000
_FORBIDDEN_NAMES = re.compile(r"fact_|sqlite_", re.IGNORECASE)
_FACT_TABLES = frozenset(FACT_PREFIX + table for table in TABLES)


class FactSource(Protocol):
    """Where the evaluator reads facts (module docstring)."""

    def open(self, cached_statements: int) -> sqlite3.Connection:
        """A new connection whose ``main.fact_<table>`` tables the views read, caching
        ``cached_statements`` prepared statements."""
        ...

    def load(self, target: sqlite3.Connection, host_id: int, tables: Collection[str]) -> None:
        """Make ``host_id``'s current rows of ``tables`` readable on ``target`` (called
        before each evaluation, outside its read transaction)."""
        ...


class FileFactSource:
    """The SQLite store's own file, read-only: its facts are there already."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def open(self, cached_statements: int) -> sqlite3.Connection:
        return sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro",
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            cached_statements=cached_statements,
        )

    def load(self, target: sqlite3.Connection, host_id: int, tables: Collection[str]) -> None:
        """Nothing to do: the file holds every host's facts."""


class _QueryFailed(Exception):
    """A policy statement failed; the message is the reason shown to the analyst."""


def _can_read(table: str, column: str, db: str | None, view: str | None) -> bool:
    """Policy SQL reads the TEMP views, from its top level or from a CTE (which SQLite
    reports as the reading "view"), and a view reads its own fact table.

    A read of no column from no named database is how SQLite reports ``EXISTS (SELECT 1 FROM
    cte)`` as well as ``count(*)`` over a table; the authorizer cannot tell them apart, so it
    allows it and the audit of the compiled program refuses any real table it would open.
    """
    if (table in TABLES and db != "main") or (column == "" and db is None):
        return True
    return view in TABLES and db == "main" and table == FACT_PREFIX + view


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.hex() if isinstance(value, bytes) else str(value)


class Evaluator:
    """Runs ``checks`` for one host at a time against the facts of ``source``.

    ``source`` is a ``FactSource``, or the path of a SQLite store (read in place). The
    store's fact tables must exist (``collector.store.facts.create_fact_tables``). One
    evaluation at a time: the connection may be used from any thread, not from two at once.
    ``max_vm_steps`` bounds each statement's work: the default is about 0.2 s of SQLite,
    some hundred times what a check over one host's facts needs. ``clock`` (Unix seconds)
    is read once per evaluation for ``posture_now()``.
    """

    def __init__(
        self,
        source: FactSource | Path,
        checks: Sequence[Check],
        *,
        max_vm_steps: int = 10_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._checks = tuple((check, tuple(sorted(check.tables))) for check in checks)
        self._source = FileFactSource(source) if isinstance(source, (str, Path)) else source
        self._conn = self._source.open(4 * len(self._checks) + 64)
        harden(self._conn)
        # Before the TEMP views (changing it drops them): see "Scratch tables" above.
        self._conn.execute("PRAGMA temp_store = MEMORY")
        register_osquery_functions(self._conn)
        self._host_id = -1
        # Deterministic: constant within one statement (which it is), so SQLite reads it
        # once per statement run instead of once per row or per branch of an OR.
        self._conn.create_function(HOST_FUNCTION, 0, lambda: self._host_id, deterministic=True)
        self._clock = clock
        self._now = 0.0
        register_clock(self._conn, lambda: self._now)
        #: ``applies`` verdicts of the evaluation under way, by statement ("Shared applies").
        self._applies: dict[str, bool] = {}
        self._columns: dict[str, list[str]] = {}
        self._install_views()
        self._budget = max(1, max_vm_steps // _STEPS_PER_CALL)
        self._calls = 0
        self._conn.set_progress_handler(self._progress, _STEPS_PER_CALL)
        self._sandbox = Sandbox(_can_read, extra_functions={HOST_FUNCTION})
        self._conn.set_authorizer(self._sandbox)
        self._refused = self._audit()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _install_views(self) -> None:
        for name, schema in TABLES.items():
            columns = ", ".join(f'"{column.name}"' for column in schema.columns)
            self._conn.execute(
                f'CREATE TEMP VIEW "{name}" AS SELECT {columns} FROM main."{FACT_PREFIX}{name}"'
                f" WHERE host_id = {HOST_FUNCTION}()"
            )

    def _audit(self) -> dict[str, str]:
        """Check id -> why it may not run, for checks that reach beyond their facts."""
        self._sandbox.trusted = True
        roots = root_pages(self._conn)
        self._sandbox.trusted = False
        refused: dict[str, str] = {}
        for check, _ in self._checks:
            for sql in filter(None, (check.query, check.applies, check.evidence)):
                reason = self._audit_one(sql, roots)
                if reason:
                    refused[check.id] = reason
                    break
        return refused

    def _audit_one(self, sql: str, roots: dict[tuple[int, int], str]) -> str | None:
        if _FORBIDDEN_NAMES.search(sql):
            return "policy SQL may not name fact_* or sqlite_* tables"
        self._calls = 0
        try:
            program = self._conn.execute("EXPLAIN " + sql).fetchall()
        except sqlite3.Error as exc:
            return self._sandbox.denial or f"does not compile: {exc}"
        strangers = program_reads(program, roots).keys() - _FACT_TABLES
        if strangers:
            return f"reads {', '.join(sorted(strangers)) or 'a table'} outside the fact tables"
        return None

    def _progress(self) -> int:
        self._calls += 1
        return 1 if self._calls > self._budget else 0

    def evaluate(
        self,
        host_id: int,
        platform: str,
        table_status: Mapping[str, str | None],
        only_tables: Collection[str] | None = None,
    ) -> list[CheckResult]:
        """Results for ``host_id``, in check order, of the checks targeting ``platform``.

        A check written for other platforms gives no result at all rather than "not
        applicable": a Linux host is not in scope of a BitLocker check, and listing the
        Windows and macOS checks on every Linux host (only those reading a table Linux
        reports too, such as ``os_version``) would bury its real results.
        ``table_status`` maps each table the host has reported to None (collected) or the
        probe's error. ``only_tables`` limits the run to checks reading one of those tables
        (re-evaluation after a delta). ``posture_now()`` returns the evaluator's clock as
        read when the evaluation starts.
        """
        checks = tuple(pair for pair in self._checks if platform in pair[0].platforms)
        if only_tables is not None:
            wanted = frozenset(only_tables)
            checks = tuple(pair for pair in checks if not pair[0].tables.isdisjoint(wanted))
        self._load(host_id, checks)
        self._host_id = host_id
        self._now = self._clock()
        self._trusted("BEGIN")
        try:
            return [self._one(check, tables, table_status) for check, tables in checks]
        finally:
            self._trusted("COMMIT")
            self._host_id = -1
            self._applies.clear()

    def _load(self, host_id: int, checks: tuple[tuple[Check, tuple[str, ...]], ...]) -> None:
        """Have the source load the host's rows of the tables these checks read."""
        tables = {table for _, check_tables in checks for table in check_tables}
        self._sandbox.trusted = True
        self._conn.set_progress_handler(None, 0)  # copying facts is not a runaway query
        try:
            self._source.load(self._conn, host_id, tables)
        finally:
            self._conn.set_progress_handler(self._progress, _STEPS_PER_CALL)
            self._sandbox.trusted = False

    def _trusted(self, sql: str) -> None:
        self._sandbox.trusted = True
        self._calls = 0
        try:
            self._conn.execute(sql)
        finally:
            self._sandbox.trusted = False

    def _one(
        self, check: Check, tables: tuple[str, ...], table_status: Mapping[str, str | None]
    ) -> CheckResult:
        missing = [table for table in tables if table not in table_status]
        if missing:
            reason = f"no facts for table {', '.join(missing)} yet"
            return CheckResult(check.id, Status.UNKNOWN, reason)
        failed = [f"table {t}: {table_status[t]}" for t in tables if table_status[t] is not None]
        if failed:
            return CheckResult(check.id, Status.ERROR, "; ".join(failed))
        if check.id in self._refused:
            return CheckResult(check.id, Status.ERROR, self._refused[check.id])
        try:
            return self._verdict(check)
        except _QueryFailed as exc:
            return CheckResult(check.id, Status.ERROR, str(exc))

    def _verdict(self, check: Check) -> CheckResult:
        if check.applies is not None and not self._applicable(check.applies):
            return CheckResult(check.id, Status.NOTAPPLICABLE, "applies query returned no rows")
        status = Status.PASS if self._exists(check.query, "query") else Status.FAIL
        if check.evidence is None:
            return CheckResult(check.id, status, "")
        try:
            names, rows = self._evidence(check.evidence)
        except _QueryFailed as exc:
            return CheckResult(check.id, status, str(exc))
        evidence = tuple(
            {name: _text(value) for name, value in zip(names, row, strict=True)} for row in rows
        )
        return CheckResult(check.id, status, "", evidence)

    def _applicable(self, sql: str) -> bool:
        """An ``applies`` verdict, run once per evaluation (module docstring)."""
        verdict = self._applies.get(sql)
        if verdict is None:
            verdict = self._applies[sql] = self._exists(sql, "applies query")
        return verdict

    def _exists(self, sql: str, role: str) -> bool:
        """Whether one policy statement returns a row (``role`` names it if it fails).

        Only the first row is stepped to and the cursor is dropped at once (CPython frees
        it, resetting the statement): a verdict needs neither column names nor more rows,
        and at a hundred checks per host the cursor bookkeeping is a visible share.
        """
        self._calls = 0
        self._sandbox.denial = None
        try:
            return self._conn.execute(sql).fetchone() is not None
        except sqlite3.Error as exc:
            raise self._failure(role, exc) from exc

    def _evidence(self, sql: str) -> tuple[list[str], list[tuple[object, ...]]]:
        """Column names and up to ``MAX_EVIDENCE_ROWS`` rows of an evidence statement.

        A prepared statement's column names never change, so they are read once per
        statement rather than rebuilt from ``cursor.description`` on every host.
        """
        self._calls = 0
        self._sandbox.denial = None
        try:
            cursor = self._conn.execute(sql)
            try:
                rows = cursor.fetchmany(MAX_EVIDENCE_ROWS)
                names = self._columns.get(sql)
                if names is None:
                    names = self._columns[sql] = [c[0] for c in cursor.description or ()]
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise self._failure("evidence query", exc) from exc
        return names, rows

    def _failure(self, role: str, exc: sqlite3.Error) -> _QueryFailed:
        """The reason a policy statement failed, as the analyst reads it."""
        if self._calls > self._budget:
            steps = self._budget * _STEPS_PER_CALL
            return _QueryFailed(f"{role} aborted after {steps} SQLite steps (runaway query?)")
        return _QueryFailed(f"{role} failed: {self._sandbox.denial or exc}")
