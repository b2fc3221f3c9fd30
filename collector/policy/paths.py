"""The paths a policy statement names for the tables agents gather only by path.

``file``, ``hash`` and ``file_lines`` are read for the filesystem paths a collection plan
names, and ``registry`` for the registry keys it names (``PATH_TABLES``), because an agent
cannot list a whole disk or registry every five minutes. The plan is derived from the
checks, so the loader finds those paths in each statement's text, as literals compared with
a path column:

- ``path = '...'`` (or ``==``), ``path LIKE '...'`` and ``path IN ('...', ...)``, for every
  path table;
- ``key = '...'``, ``key LIKE '...'`` and ``key IN (...)``, for ``registry``, whose ``key``
  column is the registry key and ``path`` the key plus a value name. A registry ``path``
  literal therefore names its key without the last component: ``...\\System\\
  InactivityTimeoutSecs`` plans the key ``...\\System`` (the agent returns every value of a
  planned key, so the value is among them).

A test may be qualified by the table or its alias (``f.path``); an unqualified one counts
for every path table the statement reads that has that column. A filesystem table left
without literals while another one has some inherits them (the usual ``file JOIN hash
USING (path)``); a registry key is never inferred from a filesystem path.

Keyed tables (``system_controls``) are narrowed the same way, by the names their key column
is tested against (``collector.policy.keyed``); unlike a path table, one read without names
is no error: it asks for every row.

Registry keys must start with a full hive name, as osquery spells them: an abbreviation
(``HKLM\\...``) would match nothing on any host, and ``HKEY_CURRENT_USER`` is the agent's
own service profile, not the signed-in user's (per-user settings live under
``HKEY_USERS\\<SID>``). Both are refused with a sentence saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from collector.policy.keyed import find_keys
from protos.posture.v1.tables import PATH_TABLES, TABLES

__all__ = ["REGISTRY_HIVES", "find_paths", "registry_key_of", "sources"]

#: Hive names osquery's registry table accepts at the start of a key (HKEY_CURRENT_USER is
#: accepted by osquery but refused here; see the module docstring).
REGISTRY_HIVES = ("HKEY_LOCAL_MACHINE", "HKEY_USERS", "HKEY_CLASSES_ROOT", "HKEY_CURRENT_CONFIG")
REGISTRY = "registry"
#: Which columns of each path table hold what the plan names.
_PATH_COLUMNS = {REGISTRY: ("key", "path")}
_FILESYSTEM_COLUMNS = ("path",)

_LITERAL = r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\""
_PATH_TEST = re.compile(
    rf"(?:\b(\w+)\s*\.\s*)?\b(path|key)\s*(?:==?\s*({_LITERAL})|like\s+({_LITERAL})"
    rf"|in\s*\(\s*((?:{_LITERAL})(?:\s*,\s*(?:{_LITERAL}))*)\s*\))",
    re.IGNORECASE,
)
_NOT_ALIAS = (
    r"where|join|on|using|inner|left|right|cross|natural|full|outer|group|order|limit|union"
    r"|except|intersect|window|having|as"
)
_SOURCE = re.compile(
    rf"(?:\bfrom|\bjoin|,)\s*(\w+)(?:\s+(?:as\s+)?(?!(?:{_NOT_ALIAS})\b)(\w+))?",
    re.IGNORECASE,
)
_ABBREVIATED_HIVES = ("HKLM", "HKU", "HKCR", "HKCC", "HKCU")

Found = dict[str, set[str]]


def sources(sql: str) -> dict[str, str]:
    """Catalogue tables named after FROM, JOIN or a comma, keyed by name and by alias."""
    found: dict[str, str] = {}
    for match in _SOURCE.finditer(sql):
        table = match[1].lower()
        if table in TABLES:
            found[table] = table
            if match[2]:
                found[match[2].lower()] = table
    return found


def registry_key_of(path: str) -> str:
    """The key of a registry ``path`` (key + backslash + value name): all but its last part."""
    return path.rpartition("\\")[0]


def find_paths(text: str, tables: Iterable[str]) -> tuple[Found, list[str]]:
    """Path literals per path table among ``tables`` read by ``text`` (SQL without
    comments), and the problems found: a path table with no literal, or a bad registry key.
    Keyed tables among ``tables`` get the row names ``text`` reads (``find_keys``).
    """
    tables = set(tables)
    found, problems = _path_literals(text, tables)
    found.update(find_keys(text, tables))
    return found, problems


def _path_literals(text: str, tables: set[str]) -> tuple[Found, list[str]]:
    read = sorted(tables & PATH_TABLES)
    if not read:
        return {}, []
    aliases = {alias: t for alias, t in sources(text).items() if t in PATH_TABLES}
    found: Found = {table: set() for table in read}
    unqualified: dict[str, set[str]] = {}
    for match in _PATH_TEST.finditer(text):
        column = match[2].lower()
        tested = " ".join(group for group in match.groups()[2:] if group)
        literals = {_unquote(literal) for literal in re.findall(_LITERAL, tested)}
        qualifier = (match[1] or "").lower()
        if not qualifier:
            unqualified.setdefault(column, set()).update(literals)
        elif aliases.get(qualifier) in found:
            found[aliases[qualifier]] |= _named(aliases[qualifier], column, literals)
    for table in read:
        for column, literals in unqualified.items():
            found[table] |= _named(table, column, literals)
    _inherit_filesystem_paths(found)
    problems = [_no_path(table) for table in read if not found[table]]
    problems += filter(None, (_bad_key(key) for key in sorted(found.get(REGISTRY, ()))))
    return found, problems


def _named(table: str, column: str, literals: set[str]) -> set[str]:
    """What ``literals`` compared with ``table.column`` name for the plan."""
    if column not in _PATH_COLUMNS.get(table, _FILESYSTEM_COLUMNS):
        return set()
    if table == REGISTRY and column == "path":
        return {registry_key_of(literal) for literal in literals}
    if table == REGISTRY:
        return {literal.rstrip("\\") for literal in literals}
    return literals


def _inherit_filesystem_paths(found: Found) -> None:
    filesystem = [table for table in found if table != REGISTRY]
    every = set().union(*(found[table] for table in filesystem))
    for table in filesystem:
        found[table] = found[table] or set(every)


def _no_path(table: str) -> str:
    if table == REGISTRY:
        return (
            "reads registry but names no key: the agent collects only named keys "
            "(constrain it with key = '...', path = '...' or LIKE patterns of them)"
        )
    return (
        f"reads {table} but names no path: the agent collects only named paths "
        f"(constrain it with path = '...', path IN (...) or path LIKE '...')"
    )


def _bad_key(key: str) -> str:
    """Why a planned registry key can match nothing useful, or "" when it is fine."""
    hive = key.partition("\\")[0].upper()
    if hive in REGISTRY_HIVES:
        return ""
    if hive in ("HKEY_CURRENT_USER", "HKCU"):
        return (
            f"registry key '{key}': HKEY_CURRENT_USER is the agent service's own profile; "
            f"read users' settings under HKEY_USERS\\%\\... instead"
        )
    if hive in _ABBREVIATED_HIVES:
        return (
            f"registry key '{key}' abbreviates its hive: write it in full "
            f"({', '.join(REGISTRY_HIVES)}), as osquery does"
        )
    return f"registry key '{key}' must start with a hive: {', '.join(REGISTRY_HIVES)}"


def _unquote(literal: str) -> str:
    quote = literal[0]
    return literal[1:-1].replace(quote * 2, quote)
