"""``registry``: the values under the registry keys a collection plan names.

The plan's paths for ``registry`` are key paths with the full hive name (the semantics are
in ``protos.posture.v1.tables``): for each one the probe returns every value directly under
that key, and, when the path's last part names a value of its parent key, that value too;
``%`` is a wildcard within one key or value name. Keys that do not exist give no rows
(a Group Policy never set is a fact policies test for); any other error (access denied)
fails the table.

Values are read through .NET's RegistryKey (``GetValueNames``, ``GetValueKind``,
``GetValue`` with ``DoNotExpandEnvironmentNames``) and written as osquery writes them:

=============  ==============  ===========================================================
.NET kind      type            data
=============  ==============  ===========================================================
String         REG_SZ          the string
ExpandString   REG_EXPAND_SZ   the string, %variables% not expanded
DWord          REG_DWORD       signed decimal (as osquery: 0xFFFFFFFF is -1)
QWord          REG_QWORD       unsigned decimal
MultiString    REG_MULTI_SZ    the strings joined with ","
Binary         REG_BINARY      upper-case hex
None/Unknown   REG_NONE        ""
=============  ==============  ===========================================================

The unnamed (default) value is named ``(Default)``. ``mtime`` (the key's last write time)
is not available through .NET and is "".
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import Record, make_row, powershell_json, run_json, text

__all__ = ["collect_registry", "registry_command", "registry_rows"]

TABLE = "registry"

_HIVES = (
    "HKEY_LOCAL_MACHINE",
    "HKEY_USERS",
    "HKEY_CURRENT_USER",
    "HKEY_CLASSES_ROOT",
    "HKEY_CURRENT_CONFIG",
)
_TYPES = {
    "String": "REG_SZ",
    "ExpandString": "REG_EXPAND_SZ",
    "DWord": "REG_DWORD",
    "QWord": "REG_QWORD",
    "MultiString": "REG_MULTI_SZ",
    "Binary": "REG_BINARY",
    "None": "REG_NONE",
    "Unknown": "REG_NONE",
}

#: For each (key pattern, value-name pattern), the matching values; a missing key is none.
_SCRIPT = (
    "$queries = @({queries}); "
    "foreach ($query in $queries) {{ "
    "try {{ $keys = @(Get-Item -Path ('Registry::' + $query.Key)) }} "
    "catch [System.Management.Automation.ItemNotFoundException] {{ $keys = @() }}; "
    "foreach ($key in $keys) {{ foreach ($name in $key.GetValueNames()) {{ "
    "if ($name -like $query.Value) {{ [pscustomobject]@{{ Key = $key.Name; Name = $name; "
    "Kind = $key.GetValueKind($name).ToString(); "
    "Data = $key.GetValue($name, $null, 'DoNotExpandEnvironmentNames') }} }} }} }} }}"
)


def _wildcard(pattern: str) -> str:
    """A plan pattern as a PowerShell wildcard: literal * ? [ ] escaped, % -> *."""
    for special in "`*?[]":
        pattern = pattern.replace(special, "`" + special)
    return pattern.replace("%", "*")


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _queries(path: str) -> list[tuple[str, str]]:
    """(key pattern, value pattern) pairs for one plan path: the key, and its parent's value."""
    normalized = path.strip().rstrip("\\")
    hive = normalized.split("\\", 1)[0].upper()
    if hive not in _HIVES:
        raise ProbeError(
            f"{TABLE}: {path!r} does not start with a hive name such as HKEY_LOCAL_MACHINE"
        )
    queries = [(_wildcard(normalized), "*")]
    parent, _, name = normalized.rpartition("\\")
    if "\\" in parent or parent.upper() in _HIVES:
        queries.append((_wildcard(parent), _wildcard(name)))
    return queries


def registry_command(paths: Sequence[str]) -> tuple[str, ...]:
    """The command reading every value the plan's registry paths name."""
    pairs = [pair for path in sorted(set(paths)) for pair in _queries(path)]
    # Hashtables, not nested arrays: PowerShell flattens @(@('a', 'b')) into @('a', 'b').
    listed = ", ".join(
        f"@{{ Key = {_quoted(key)}; Value = {_quoted(name)} }}" for key, name in pairs
    )
    return powershell_json(_SCRIPT.format(queries=listed))


def _data(kind: str, data: object) -> str:
    if kind == "MultiString" and isinstance(data, list):
        return ",".join(text(item) for item in data)
    if kind == "Binary" and isinstance(data, list):
        return bytes(int(item) & 0xFF for item in data).hex().upper()
    if kind == "QWord" and isinstance(data, int) and data < 0:
        return str(data + 2**64)
    return text(data)


def registry_rows(records: list[Record]) -> list[Row]:
    """One row per value, each once even when two plan paths name it."""
    rows: dict[tuple[str, str], Row] = {}
    for record in records:
        key, name, kind = (text(record.get(field)) for field in ("Key", "Name", "Kind"))
        shown = name or "(Default)"
        rows[(key.lower(), shown.lower())] = make_row(
            TABLE,
            {
                "key": key,
                "path": f"{key}\\{shown}",
                "name": shown,
                "type": _TYPES.get(kind, "REG_NONE"),
                "data": _data(kind, record.get("Data")),
            },
        )
    return list(rows.values())


def collect_registry(runner: Runner, paths: Sequence[str], timeout: float) -> list[Row]:
    if not paths:
        return []
    return registry_rows(run_json(runner, registry_command(paths), TABLE, timeout))
