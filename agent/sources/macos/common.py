"""What every macOS probe shares: catalogue-shaped rows, plists and tool output.

macOS tools print fixed English strings whatever the user's language (``csrutil``,
``spctl``, ``fdesetup``, ``socketfilterfw`` are not localized), and several can print
property lists, which are parsed with ``plistlib`` rather than read as text. Each parser
accepts only the outputs it knows and raises ProbeError on anything else: a guessed row
could pass a check that should fail.
"""

from __future__ import annotations

import plistlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from agent.sources.base import ProbeError, Row, platform_row

__all__ = [
    "COMMAND_TIMEOUT",
    "PLATFORM",
    "flag",
    "load_plist",
    "make_row",
    "parse_plist",
    "read_plist",
    "unix_time",
]

PLATFORM = "darwin"

#: Seconds a macOS tool may take before it is killed and its table reports the timeout.
COMMAND_TIMEOUT = 30.0


def make_row(table: str, values: Mapping[str, str]) -> Row:
    """A row of ``table`` with every macOS column: ``values`` where given, "" elsewhere."""
    return platform_row(table, PLATFORM, values)


def parse_plist(data: bytes | str, table: str) -> dict[str, Any]:
    """A property list (XML or binary) whose top level is a dictionary."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        decoded = plistlib.loads(raw)
    except (plistlib.InvalidFileException, ExpatError, ValueError, OverflowError) as error:
        raise ProbeError(f"{table}: not a property list: {error}") from None
    if not isinstance(decoded, dict):
        raise ProbeError(f"{table}: the property list is not a dictionary")
    return decoded


def read_plist(path: Path, table: str) -> dict[str, Any] | None:
    """The dictionary in the plist file at ``path``; None when the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ProbeError(f"{table}: cannot read {path}: {error.strerror or error}") from None
    return parse_plist(data, table)


def load_plist(path: Path, table: str) -> dict[str, Any]:
    """Like ``read_plist``, with an empty dictionary for a missing file."""
    return read_plist(path, table) or {}


def flag(value: object) -> str:
    """A plist boolean or 0/1 number as 1/0; "" when absent or of another kind."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) and value in (0, 1):
        return str(value)
    return ""


def unix_time(value: object) -> str:
    """A plist date as Unix seconds (plistlib gives naive datetimes in UTC)."""
    if not isinstance(value, datetime):
        return ""
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return str(int(moment.timestamp()))
