"""The one small interface every fact source implements.

A source turns a table request into rows of strings under osquery's table and column names
(the catalogue in ``protos.posture.v1.tables``), so a policy never cares which source
produced them. Sources raise ``ProbeError`` with a reason when they cannot produce a table;
the collection loop records that reason as the table's error instead of sending an empty
table, which would read as "nothing found" and could pass a check by accident.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from protos.posture.v1.tables import columns_for

__all__ = [
    "FactSource",
    "NativeSource",
    "ProbeError",
    "Row",
    "TableCollector",
    "TableRequest",
    "platform_row",
]

#: One row: column name -> value, always strings, as osquery returns them.
Row = dict[str, str]


class ProbeError(Exception):
    """A table could not be collected; the message says why, for the analyst."""


@dataclass(frozen=True)
class TableRequest:
    """One table of a collection plan; ``paths`` only for file, hash, file_lines and
    registry (what to read), and for system_controls (the names of the rows to read; none:
    every row; see ``KEYED_TABLES`` in the catalogue).

    ``columns`` is what the policies read; sources may fill every column regardless, the
    collection loop keeps only these before anything leaves the host.
    """

    name: str
    paths: tuple[str, ...] = field(default=())
    columns: tuple[str, ...] = field(default=())


class FactSource(Protocol):
    """Something that can produce some fact tables on this machine."""

    #: Short name shown in logs and docs, e.g. "native" or "osquery".
    name: str

    def available(self) -> bool:
        """Whether this source can run here at all (platform, socket present...)."""
        ...

    def tables(self) -> frozenset[str]:
        """The table names this source can produce on this machine."""
        ...

    def collect(self, request: TableRequest) -> list[Row]:
        """Every row of ``request.name``; raises ProbeError when the table cannot be read."""
        ...


@functools.cache
def _catalogue_columns(table: str, platform: str) -> tuple[tuple[str, ...], frozenset[str]]:
    names = columns_for(table, platform)
    return names, frozenset(names)


def platform_row(table: str, platform: str, values: Mapping[str, str]) -> Row:
    """A row of ``table`` with every column osquery fills on ``platform``: ``values`` where
    given, "" elsewhere (as osquery reports a value it does not know). A column the
    catalogue does not have is a bug in the probe, so it raises KeyError."""
    names, known = _catalogue_columns(table, platform)
    unknown = values.keys() - known
    if unknown:
        raise KeyError(f"{table} has no {platform} column(s) {sorted(unknown)}")
    return {column: values.get(column, "") for column in names}


#: Collects one table for a request; raises ProbeError (or an OS-level error) on failure.
TableCollector = Callable[[TableRequest], list[Row]]

#: Failures a probe may raise that mean "this table could not be read", not a bug here.
_PROBE_FAILURES = (OSError, ValueError, TypeError, AttributeError, LookupError, psutil.Error)


class NativeSource:
    """A native source: a map of table name -> collector, live on one platform.

    Subclasses fill ``collectors`` for their platform; this class answers the FactSource
    protocol and turns any failure of a probe into a ProbeError naming the table, so one
    unreadable table never stops the others.
    """

    name = "native"

    def __init__(
        self, platform: str, active_on: str, label: str, collectors: dict[str, TableCollector]
    ) -> None:
        self._platform, self._active_on, self._label = platform, active_on, label
        self._collectors = collectors

    def available(self) -> bool:
        return self._platform == self._active_on

    def tables(self) -> frozenset[str]:
        return frozenset(self._collectors) if self.available() else frozenset()

    def collect(self, request: TableRequest) -> list[Row]:
        if request.name not in self.tables():
            raise ProbeError(f"the native {self._label} source cannot produce {request.name} here")
        try:
            return self._collectors[request.name](request)
        except ProbeError:
            raise
        except _PROBE_FAILURES as error:
            raise ProbeError(f"{request.name}: {type(error).__name__}: {error}") from None
