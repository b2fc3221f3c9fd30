"""The collection plan: which tables (and which paths) agents gather, and how often.

Derived from the loaded checks, never written by hand: an agent gathers exactly what the
enabled policies read (DESIGN §3), which keeps its load and the personal data it ships to the
minimum. The plan travels as JSON (``to_dict``/``from_dict``); the agent reads the same JSON
from a file with ``--plan FILE``. ``version`` is a digest of the content, so the collector and
an agent can tell in one comparison whether the agent runs the current plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.policy.keyed import ALL_ROWS
from collector.policy.model import Pack
from protos.posture.v1.tables import KEYED_TABLES, PATH_TABLES, TABLES

__all__ = ["ALWAYS_COLLECTED", "CollectionPlan", "PlannedTable", "collection_plan"]

#: Tables every plan includes: the collector shows host identity and platform from them.
ALWAYS_COLLECTED = ("os_version", "system_info")


@dataclass(frozen=True)
class PlannedTable:
    """One table to collect.

    ``paths`` (path tables only) are, for file, hash and file_lines, exact paths or osquery
    LIKE patterns (``%`` within one directory level, ``%%`` recursively), and for registry the
    keys whose values to read (``%`` within one key name; see ``collector.policy.paths``).
    For a keyed table (``system_controls``) they are the names of the rows to read (``%``
    wildcards), and empty means every row (``collector.policy.keyed``).
    ``columns`` are the columns the checks
    use, the only ones an agent needs to send; empty means every column (a table whose rows
    the checks only count, and the identity tables).
    """

    name: str
    paths: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "paths": list(self.paths), "columns": list(self.columns)}


@dataclass(frozen=True)
class CollectionPlan:
    version: str
    interval_seconds: int
    tables: tuple[PlannedTable, ...]

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return {
            "version": self.version,
            "interval_seconds": self.interval_seconds,
            "tables": [table.to_dict() for table in self.tables],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectionPlan:
        """Read a plan written by ``to_dict``; ValueError names what is malformed."""
        version, interval, tables = (data.get(k) for k in ("version", "interval_seconds", "tables"))
        if not isinstance(version, str) or not version:
            raise ValueError("plan: 'version' must be a non-empty string")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise ValueError("plan: 'interval_seconds' must be a positive integer")
        if not isinstance(tables, list):
            raise ValueError("plan: 'tables' must be a list")
        return cls(version, interval, tuple(_planned_table(item) for item in tables))


def _planned_table(item: object) -> PlannedTable:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise ValueError("plan: each table must be an object with a string 'name'")
    lists = []
    for key in ("paths", "columns"):
        values = item.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"plan: {key} of table {item['name']} must be a list of strings")
        lists.append(tuple(values))
    return PlannedTable(item["name"], *lists)


def collection_plan(
    packs: Sequence[Pack], platform: str | None = None, interval_seconds: int = 300
) -> CollectionPlan:
    """The union of what the checks targeting ``platform`` read (every check when None).

    Tables are sorted by name, and paths and columns within a table sorted, so equal content
    always gives an equal ``version``.
    """
    paths: dict[str, set[str]] = {name: set() for name in ALWAYS_COLLECTED}
    columns: dict[str, set[str]] = {name: set() for name in ALWAYS_COLLECTED}
    every_column = set(ALWAYS_COLLECTED)
    for pack in packs:
        for check in pack.checks:
            if platform is not None and platform not in check.platforms:
                continue
            for table in check.tables:
                paths.setdefault(table, set()).update(_rows_read(check.paths, table))
                columns.setdefault(table, set()).update(check.columns.get(table, ()))
    tables = tuple(
        PlannedTable(
            name,
            _planned_rows(name, paths[name]),
            () if name in every_column else tuple(sorted(columns[name])),
        )
        for name in sorted(paths)
        if name in TABLES
    )
    return CollectionPlan(_version(interval_seconds, tables), interval_seconds, tables)


def _rows_read(paths: Mapping[str, tuple[str, ...]], table: str) -> tuple[str, ...]:
    """The paths or row names one check reads of ``table``; a keyed table read without
    names (a check built before row names existed) is read whole."""
    rows = paths.get(table, ())
    return (rows or (ALL_ROWS,)) if table in KEYED_TABLES else rows


def _planned_rows(table: str, rows: set[str]) -> tuple[str, ...]:
    """What the plan names of ``table``: paths, row names, or () for every row."""
    if table in PATH_TABLES or (table in KEYED_TABLES and ALL_ROWS not in rows):
        return tuple(sorted(rows))
    return ()


def _version(interval_seconds: int, tables: tuple[PlannedTable, ...]) -> str:
    content = {
        "interval_seconds": interval_seconds,
        "tables": [table.to_dict() for table in tables],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
