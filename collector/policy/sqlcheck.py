"""Static checks of policy SQL against the fact table catalogue.

Each statement is prepared (``EXPLAIN``, never run) in an in-memory database holding one
empty TEMP table per catalogue table, exactly as the evaluator's TEMP views present them,
under the evaluator's own authorizer. Preparing proves it compiles; the authorizer refuses
anything but a SELECT and reports the columns read, and the compiled program adds what the
authorizer misses (a ``USING (uid)`` join reports neither side's ``uid``). On top come the
checks Fleet's own packs show are needed (osquery-and-fleet.md §2.4): columns that do not
exist, tables or columns osquery does not fill on the check's platforms, and
reads of path tables (``file``, ``hash``, ``file_lines``, ``registry``) that name no path or
key, which no agent would collect. Which paths a statement names is
``collector.policy.paths``' job.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from collector.policy.paths import find_paths, sources
from collector.policy.sandbox import (
    Sandbox,
    harden,
    program_reads,
    register_clock,
    register_osquery_functions,
    root_pages,
)
from protos.posture.v1.tables import TABLES

__all__ = ["Analysis", "CatalogueSchema", "merge_reads"]

_STRINGS_AND_COMMENTS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL
)
_LEADING_SELECT = re.compile(r"\s*(?:select|with|values)\b", re.IGNORECASE)


@dataclass
class Analysis:
    """What one statement reads, or why it is refused (``problems`` non-empty)."""

    tables: set[str] = field(default_factory=set)
    columns: dict[str, set[str]] = field(default_factory=dict)
    paths: dict[str, set[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


Reads = dict[str, tuple[str, ...]]


def merge_reads(analyses: Iterable[Analysis]) -> tuple[Reads, Reads]:
    """The columns and the paths several statements read together, per table, sorted."""
    columns: dict[str, set[str]] = {}
    paths: dict[str, set[str]] = {}
    for analysis in analyses:
        for table, names in analysis.columns.items():
            columns.setdefault(table, set()).update(names)
        for table, literals in analysis.paths.items():
            paths.setdefault(table, set()).update(literals)
    return _sorted(columns), _sorted(paths)


def _sorted(merged: dict[str, set[str]]) -> Reads:
    return {key: tuple(sorted(values)) for key, values in sorted(merged.items())}


def _can_read(table: str, column: str, db: str | None, _view: str | None) -> bool:
    """The catalogue's TEMP tables; and rows-only reads of unnamed databases, which is how
    SQLite reports ``EXISTS (SELECT 1 FROM cte)`` (a real table read that way is caught when
    the compiled program is audited)."""
    return (table in TABLES and db != "main") or (column == "" and db is None)


def _strip_comments(sql: str) -> str:
    return _STRINGS_AND_COMMENTS.sub(lambda m: m[0] if m[0][0] in "'\"" else " ", sql)


class CatalogueSchema:
    """An empty copy of the catalogue that policy SQL is prepared against."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", isolation_level=None)
        harden(self._conn)
        register_osquery_functions(self._conn)
        register_clock(self._conn, time.time)
        for name, schema in TABLES.items():
            columns = ", ".join(f'"{c.name}" {c.sql_type}' for c in schema.columns)
            self._conn.execute(f'CREATE TEMP TABLE "{name}" ({columns})')
        self._roots = root_pages(self._conn)
        self._read: dict[str, set[str]] = {}
        self._sandbox = Sandbox(_can_read)
        self._conn.set_authorizer(self._sandbox)

    def close(self) -> None:
        self._conn.close()

    def analyse(self, sql: str, platforms: frozenset[str]) -> Analysis:
        """Compile ``sql`` and report what it reads, for a check targeting ``platforms``."""
        analysis = Analysis()
        text = _strip_comments(sql)
        if not _LEADING_SELECT.match(text):
            analysis.problems.append("must be a single SELECT statement")
            return analysis
        problem = self._compile(sql, text)
        if problem:
            analysis.problems.append(problem)
            return analysis
        analysis.tables = set(self._read)
        analysis.columns = self._read
        analysis.problems += self._platform_problems(text, platforms)
        self._find_paths(text, analysis)
        return analysis

    def _compile(self, sql: str, text: str) -> str | None:
        self._sandbox.reset()
        try:
            program = self._conn.execute("EXPLAIN " + sql).fetchall()
        except (sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            if "one statement" in str(exc):
                return "must be a single SELECT statement (found several statements)"
            return f"does not compile: {exc}"
        except sqlite3.DatabaseError as exc:
            return self._sandbox.denial or _explain_error(str(exc), text)
        opened = program_reads(program, self._roots)
        strangers = opened.keys() - TABLES.keys()
        if strangers:
            return f"reads {', '.join(sorted(strangers)) or 'a table'} that is not a fact table"
        self._read = {table: _column_names(table, numbers) for table, numbers in opened.items()}
        for table, column in self._sandbox.reads:
            if table in TABLES:  # CTE names too are reported when only their rows count
                self._read.setdefault(table, set()).update([column] if column else [])
        return None

    def _platform_problems(self, text: str, platforms: frozenset[str]) -> list[str]:
        problems = []
        for table in sorted(self._read):
            missing = platforms - TABLES[table].platforms
            if missing:
                problems.append(f"reads {table}, which is not collected on {_names(missing)}")
        for table, column in sorted((t, c) for t, columns in self._read.items() for c in columns):
            spec = next((c for c in TABLES[table].columns if c.name == column), None)
            if spec is None or not spec.platforms or not platforms - spec.platforms:
                continue
            # A SELECT * reads every column; only a column named in the text is a mistake.
            if re.search(rf"\b{re.escape(column)}\b", text, re.IGNORECASE):
                problems.append(
                    f"column {table}.{column} is only collected on {_names(spec.platforms)}, "
                    f"not on {_names(platforms - spec.platforms)}"
                )
        return problems

    @staticmethod
    def _find_paths(text: str, analysis: Analysis) -> None:
        analysis.paths, problems = find_paths(text, analysis.tables)
        analysis.problems += problems


def _column_names(table: str, numbers: set[int]) -> set[str]:
    """Column numbers of a program's reads, as catalogue names (the schema database's tables
    have the catalogue's columns in order, and no index whose numbering would differ)."""
    columns = TABLES[table].columns
    return {columns[number].name for number in numbers if 0 <= number < len(columns)}


def _names(platforms: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(platforms))


def _explain_error(message: str, text: str) -> str:
    """Turn SQLite's compile error into the sentence a pack author needs."""
    table = re.match(r"no such table: (\S+)", message)
    if table:
        return f"unknown table {table[1]}"
    function = re.match(r"no such function: (\S+)", message)
    if function:
        return f"function {function[1]}() does not exist"
    column = re.match(r"no such column: (\S+)", message)
    if column:
        return _unknown_column(column[1], sources(text))
    return f"does not compile: {message}"


def _unknown_column(name: str, sources: dict[str, str]) -> str:
    qualifier, _, column = name.rpartition(".")
    if qualifier:
        return f"unknown column {sources.get(qualifier.lower(), qualifier)}.{column}"
    tables = sorted(set(sources.values()))
    if len(tables) == 1:
        return f"unknown column {tables[0]}.{column}"
    if tables:
        return f"unknown column {column} (not in {', '.join(tables)})"
    return f"unknown column {column}"
