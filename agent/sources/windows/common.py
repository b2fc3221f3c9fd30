"""What every Windows probe shares: catalogue-shaped rows and PowerShell's JSON.

Probes ask PowerShell for JSON (``ConvertTo-Json``) and never parse console text: Windows
translates its console output (``manage-bde`` prints "Schutzstatus" on a German laptop),
formats it for the width of a terminal, and elides long values with "...". JSON carries
property names, which are never translated, and enum values as numbers.

Scripts run as ``powershell.exe -NoProfile -NonInteractive -Command SCRIPT``: Windows
PowerShell 5.1 ships with every Windows 10 and 11, so nothing needs installing; no profile
script can change the output; and no prompt can hang a probe. The script is passed in
clear rather than ``-EncodedCommand``, which endpoint protection rightly treats as a sign
of malware, and it contains no double quote, so Windows' command-line quoting never needs
to escape anything inside it. Every script starts by making errors terminating (a failing
cmdlet exits non-zero with its message on stderr, which becomes the ProbeError), silencing
warnings and progress (the console host would print them into the JSON), and making stdout
UTF-8 (user and product names are not ASCII everywhere).

``ConvertTo-Json -InputObject @(...)`` always prints an array, even for no or one object
(a pipeline into ConvertTo-Json prints nothing for none and a bare object for one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent.runner import Runner
from agent.sources.base import ProbeError, Row, platform_row

__all__ = [
    "PLATFORM",
    "POWERSHELL_TIMEOUT",
    "Record",
    "flag",
    "integer",
    "json_records",
    "make_row",
    "powershell",
    "powershell_json",
    "run_json",
    "text",
    "unix_time",
]

PLATFORM = "windows"

#: Seconds a PowerShell probe may take: starting PowerShell alone takes 0.3-1 s, CIM
#: queries a few more on a busy laptop; a probe that hangs is killed after this.
POWERSHELL_TIMEOUT = 60.0

#: One object as ConvertTo-Json printed it.
Record = dict[str, Any]

_PREAMBLE = (
    "$ErrorActionPreference = 'Stop'; [Console]::OutputEncoding = [System.Text.Encoding]::UTF8; "
)

#: How Windows PowerShell 5.1 writes a DateTime in JSON: milliseconds since 1970 (UTC),
#: possibly with an offset that does not change the instant.
_MS_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def powershell(script: str) -> tuple[str, ...]:
    """The command line running ``script`` (see the module docstring for why this way)."""
    if '"' in script:
        raise ValueError("PowerShell probe scripts must not contain double quotes")
    return ("powershell.exe", "-NoProfile", "-NonInteractive", "-Command", _PREAMBLE + script)


def powershell_json(expression: str) -> tuple[str, ...]:
    """The command line printing ``expression``'s objects as one compact JSON array."""
    return powershell(f"ConvertTo-Json -InputObject @({expression}) -Depth 4 -Compress")


def run_json(
    runner: Runner, command: tuple[str, ...], table: str, timeout: float = POWERSHELL_TIMEOUT
) -> list[Record]:
    """Run a ``powershell_json`` command and decode its objects (ProbeError on failure)."""
    return json_records(runner.run(command, timeout=timeout), table)


def json_records(output: str, table: str) -> list[Record]:
    """The objects in ConvertTo-Json's output: an array, one bare object, or nothing.

    Anything else (console text, a truncated document) is a ProbeError: rows guessed from
    text a person was meant to read could pass a check they should fail.
    """
    stripped = output.strip().lstrip("\ufeff")
    if not stripped:
        return []
    try:
        decoded = json.loads(stripped)
    except json.JSONDecodeError:
        snippet = " ".join(stripped.split())[:60]
        raise ProbeError(f"{table}: PowerShell did not print JSON: {snippet!r}") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    if not all(isinstance(item, dict) for item in items):
        raise ProbeError(f"{table}: PowerShell printed JSON that is not a list of objects")
    return items


def make_row(table: str, values: Mapping[str, str]) -> Row:
    """A row of ``table`` with every Windows column: ``values`` where given, "" elsewhere."""
    return platform_row(table, PLATFORM, values)


def text(value: object) -> str:
    """A JSON value as osquery's text: null is "", booleans 1/0, numbers in decimal."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flag(value: object) -> str:
    """A boolean as 1/0 from JSON true/false, 1/0 or "True"/"False"; "" when unknown."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value in (0, 1):
        return str(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return "1" if value.lower() == "true" else "0"
    return ""


def integer(value: object) -> str:
    """A whole number as text; "" for null or anything that is not one."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return value.strip()
    return ""


def unix_time(value: object) -> str:
    """A PowerShell DateTime as Unix seconds: 5.1's ``/Date(ms)/`` or 7's ISO 8601.

    An ISO time without an offset is taken as UTC (PowerShell 7 writes local times with
    their offset, and UTC ones with "Z"); "" for null or an unreadable value.
    """
    if not isinstance(value, str) or not value:
        return ""
    match = _MS_DATE.match(value)
    if match:
        return str(int(match[1]) // 1000)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(int(moment.timestamp()))
