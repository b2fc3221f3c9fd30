"""The sandbox policy SQL runs in: an SQLite authorizer, a function whitelist, osquery's extras.

Policy SQL is data written by pack authors and runs inside the collector's process, so it
gets exactly what a check needs and nothing more: SELECT (including recursive CTEs), reads of
the fact tables, and the functions listed here. Everything else (writes, PRAGMA, ATTACH,
``load_extension``, reading the collector's own tables such as ``hosts``) is denied when the
statement is prepared, and the denial is recorded so the caller can say what was refused.
The loader validates packs through the same authorizer, so a check that loads is a check the
evaluator will run.

SQLite does not call the authorizer for a table joined only through ``USING (...)`` (found
while writing this module: ``SELECT 1 FROM file JOIN hash USING (path)`` reports no read of
``hash``). So the tables a statement opens are also read from its ``EXPLAIN`` program
(``OpenRead`` names a root page, mapped back to its table): that is what derives a check's
tables, and what the evaluator audits before it runs a check.

osquery adds SQL functions that Fleet's policies use; the cheap ones are provided here with
osquery's semantics (Python's ``re`` stands in for ``std::regex``; the common syntax is the
same):

- ``regex_match(text, pattern, index)``: group ``index`` of the first match (0 = the whole
  match), NULL without a match.
- ``regex_split(text, pattern, index)``: the ``index``-th non-empty piece of ``text`` split
  on ``pattern``.
- ``split(text, tokens, index)``: the ``index``-th non-empty piece of ``text`` split on any
  character of ``tokens``, trimmed, as osquery's ``split`` does.
- ``concat(a, ...)`` and ``concat_ws(sep, a, ...)``: text concatenation, NULLs skipped.
- ``x REGEXP pattern``: 1 when ``pattern`` matches anywhere in ``x``.

And one of Posture's own, ``posture_now()``: the time of the evaluation in Unix seconds.
Checks such as "patched within 30 days" need a clock; SQLite's ``'now'`` changes from one
statement to the next and cannot be set, while this one is fixed for a whole host
evaluation and set by the evaluator, so a re-evaluation "as of" a date, and a fixture
pinned to a date, give the same result every time.

The progress handler that stops runaway SQL cannot interrupt Python's ``re`` while it runs:
a pathological pattern in a pack stalls evaluation. Packs are written by administrators and
reviewed like code; that, not this module, is the defence against them.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterable

__all__ = [
    "ALLOWED_FUNCTIONS",
    "CLOCK_FUNCTION",
    "Sandbox",
    "harden",
    "program_reads",
    "register_clock",
    "register_osquery_functions",
    "root_pages",
]

_CORE = """abs char coalesce format glob hex ifnull iif instr length like likelihood likely
lower ltrim max min nullif octet_length printf quote random replace round rtrim sign soundex
substr substring trim typeof unhex unicode unlikely upper"""
_AGGREGATE = "avg count group_concat string_agg sum total"
_WINDOW = """row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
last_value nth_value"""
_DATE = "date time datetime julianday unixepoch strftime timediff"
_MATH = """acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln
log log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc"""
_JSON = """json json_array json_array_length json_error_position json_extract json_insert
json_object json_patch json_quote json_remove json_replace json_set json_type json_valid
json_group_array json_group_object -> ->>"""
_OSQUERY = "regex_match regex_split split concat concat_ws regexp"
#: The evaluation's clock (module docstring).
CLOCK_FUNCTION = "posture_now"

#: Functions policy SQL may call. Left out on purpose: ``load_extension``, anything that
#: allocates on demand (``randomblob``, ``zeroblob``), and connection state
#: (``changes``, ``last_insert_rowid``, ``sqlite_*``).
ALLOWED_FUNCTIONS = frozenset(
    " ".join((_CORE, _AGGREGATE, _WINDOW, _DATE, _MATH, _JSON, _OSQUERY, CLOCK_FUNCTION)).split()
)

_DENIED_ACTIONS = tuple(
    "SQLITE_" + name
    for name in [
        "CREATE_",
        "DROP_",
        "ALTER_TABLE",
        "INSERT",
        "UPDATE",
        "DELETE",
        "PRAGMA",
        "ATTACH",
        "DETACH",
        "TRANSACTION",
        "SAVEPOINT",
        "REINDEX",
        "ANALYZE",
    ]
)
#: SQLite authorizer action codes -> the statement kind they stand for ("CREATE TABLE").
_ACTION_NAMES = {
    getattr(sqlite3, name): name.removeprefix("SQLITE_").replace("_", " ")
    for name in dir(sqlite3)
    if name.startswith(_DENIED_ACTIONS)
}

#: A column-read check: (table, column, database, view that reads it) -> allowed?
ReadRule = Callable[[str, str, str | None, str | None], bool]


class Sandbox:
    """An SQLite authorizer for policy SQL (pass it to ``Connection.set_authorizer``).

    ``can_read`` decides which tables may be read; ``extra_functions`` are allowed besides
    ``ALLOWED_FUNCTIONS`` (the owner's own, such as the evaluator's host filter). Allowed
    reads are collected in ``reads`` as (table, column) pairs (column "" when only rows are
    counted); the last refusal is kept in ``denial`` as a sentence. While ``trusted`` is
    set, everything is allowed: the owner of the connection flips it around its own
    statements, because setting a new authorizer would expire every prepared statement in
    SQLite's cache.
    """

    def __init__(self, can_read: ReadRule, extra_functions: Iterable[str] = ()) -> None:
        self._can_read = can_read
        self._functions = ALLOWED_FUNCTIONS | frozenset(extra_functions)
        self.trusted = False
        self.reads: set[tuple[str, str]] = set()
        self.denial: str | None = None

    def reset(self) -> None:
        self.reads = set()
        self.denial = None

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, view: str | None
    ) -> int:
        if self.trusted or action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and arg1 is not None:
            return self._read(arg1, arg2 or "", db, view)
        if action == sqlite3.SQLITE_FUNCTION and arg2 is not None:
            if arg2.lower() in self._functions:
                return sqlite3.SQLITE_OK
            return self._deny(f"function {arg2}() is not allowed in policy SQL")
        what = _ACTION_NAMES.get(action, f"operation {action}")
        return self._deny(f"{what} is not allowed in policy SQL (only SELECT)")

    def _read(self, table: str, column: str, db: str | None, view: str | None) -> int:
        if self._can_read(table, column, db, view):
            self.reads.add((table, column))
            return sqlite3.SQLITE_OK
        return self._deny(f"reading {table} is not allowed: it is not a fact table")

    def _deny(self, sentence: str) -> int:
        self.denial = sentence
        return sqlite3.SQLITE_DENY


def harden(conn: sqlite3.Connection) -> None:
    """Limits that hold even if the authorizer were bypassed: no ATTACH, bounded values."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000_000)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 1_000_000)


def root_pages(conn: sqlite3.Connection) -> dict[tuple[int, int], str]:
    """(database number, root page) -> table name, for main (0) and temp (1).

    Indexes map to the table they index, so any B-tree a program opens names its table.
    """
    roots: dict[tuple[int, int], str] = {(0, 1): "sqlite_master", (1, 1): "sqlite_temp_master"}
    for number, schema in ((0, "main.sqlite_master"), (1, "temp.sqlite_master")):
        query = f"SELECT tbl_name, rootpage FROM {schema} WHERE rootpage > 0"
        for table, root in conn.execute(query):
            roots[(number, root)] = table
    return roots


def program_reads(
    explain: Iterable[tuple[object, ...]], roots: dict[tuple[int, int], str]
) -> dict[str, set[int]]:
    """Each B-tree an ``EXPLAIN`` program opens, named by its table ("" for a root page
    ``roots`` does not know), with the column numbers the program reads from it.

    Column numbers count a table's record columns, or an index's key columns when the
    cursor is on an index.
    """
    cursors: dict[object, str] = {}
    reads: dict[str, set[int]] = {}
    for _addr, opcode, cursor, page, database, *_rest in explain:
        if opcode in ("OpenRead", "OpenWrite", "ReopenIdx"):
            table = ""
            if isinstance(database, int) and isinstance(page, int):
                table = roots.get((database, page), "")
            cursors[cursor] = table
            reads.setdefault(table, set())
        elif opcode == "Column" and cursor in cursors and isinstance(page, int):
            reads[cursors[cursor]].add(page)
    return reads


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _piece(pieces: list[str], index: object) -> str | None:
    if not isinstance(index, int) or not 0 <= index < len(pieces):
        return None
    return pieces[index]


def _regex_match(text: object, pattern: object, index: object) -> str | None:
    if not isinstance(text, str) or not isinstance(pattern, str) or not isinstance(index, int):
        return None
    match = _regex(pattern).search(text)
    if match is None or not 0 <= index <= (match.re.groups):
        return None
    return match.group(index)


def _regex_split(text: object, pattern: object, index: object) -> str | None:
    if not isinstance(text, str) or not isinstance(pattern, str):
        return None
    return _piece([p for p in _regex(pattern).split(text) if p], index)


def _split(text: object, tokens: object, index: object) -> str | None:
    if not isinstance(text, str) or not isinstance(tokens, str) or not tokens:
        return None
    pieces = re.split("[" + re.escape(tokens) + "]", text)
    return _piece([p.strip() for p in pieces if p], index)


def _concat(*values: object) -> str:
    return "".join(str(v) for v in values if v is not None)


def _concat_ws(separator: object, *values: object) -> str | None:
    if separator is None:
        return None
    return str(separator).join(str(v) for v in values if v is not None)


def _regexp(pattern: object, text: object) -> int | None:
    if not isinstance(pattern, str) or text is None:
        return None
    return 1 if _regex(pattern).search(str(text)) else 0


def register_osquery_functions(conn: sqlite3.Connection) -> None:
    """Add osquery's extra SQL functions (see the module docstring) to ``conn``."""
    conn.create_function("regex_match", 3, _regex_match, deterministic=True)
    conn.create_function("regex_split", 3, _regex_split, deterministic=True)
    conn.create_function("split", 3, _split, deterministic=True)
    conn.create_function("concat", -1, _concat, deterministic=True)
    conn.create_function("concat_ws", -1, _concat_ws, deterministic=True)
    conn.create_function("regexp", 2, _regexp, deterministic=True)


def register_clock(conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
    """Add ``posture_now()`` to ``conn``: ``clock()`` as whole Unix seconds, read each call."""
    conn.create_function(CLOCK_FUNCTION, 0, lambda: int(clock()))
