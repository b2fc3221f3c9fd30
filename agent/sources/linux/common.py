"""Helpers every Linux probe shares: building catalogue-shaped rows and reading small files.

Rows are built through ``make_row`` so each one has exactly the catalogue's Linux columns,
with "" for what a probe could not learn (as osquery does); a probe naming a column the
catalogue lacks is a programming error and fails loudly in tests rather than on the wire.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from agent.sources.base import ProbeError, Row, platform_row
from protos.posture.v1.tables import columns_for

__all__ = ["PLATFORM", "columns", "make_row", "read_optional", "read_required"]

PLATFORM = "linux"


@functools.cache
def columns(table: str) -> tuple[str, ...]:
    """The catalogue's columns for ``table`` on Linux, in catalogue order."""
    return columns_for(table, PLATFORM)


def make_row(table: str, values: Mapping[str, str]) -> Row:
    """A row of ``table`` with every Linux column: ``values`` where given, "" elsewhere."""
    return platform_row(table, PLATFORM, values)


def read_optional(path: Path | str) -> str | None:
    """The text of ``path``, or None when it does not exist or cannot be read.

    For sources of optional detail (a DMI field, a config drop-in): their absence must not
    fail a whole table.
    """
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_required(path: Path | str, table: str) -> str:
    """The text of ``path``; a ProbeError naming ``table`` when it cannot be read.

    For a table's primary source: an unreadable /etc/passwd must read as "could not
    check", never as "no users".
    """
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ProbeError(f"{table}: {path} does not exist") from None
    except PermissionError:
        raise ProbeError(f"{table}: {path} is not readable (the agent must run as root)") from None
    except OSError as error:
        raise ProbeError(f"{table}: cannot read {path}: {error.strerror or error}") from None
