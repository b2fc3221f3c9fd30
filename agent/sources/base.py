"""The one small interface every fact source implements.

A source turns a table request into rows of strings under osquery's table and column names
(the catalogue in ``protos.posture.v1.tables``), so a policy never cares which source
produced them. Sources raise ``ProbeError`` with a reason when they cannot produce a table;
the collection loop records that reason as the table's error instead of sending an empty
table, which would read as "nothing found" and could pass a check by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["FactSource", "ProbeError", "Row", "TableRequest"]

#: One row: column name -> value, always strings, as osquery returns them.
Row = dict[str, str]


class ProbeError(Exception):
    """A table could not be collected; the message says why, for the analyst."""


@dataclass(frozen=True)
class TableRequest:
    """One table of a collection plan; ``paths`` only for file, hash and file_lines.

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
