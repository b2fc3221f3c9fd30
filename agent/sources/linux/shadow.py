"""``shadow``: password state and ageing of local accounts, never the password hashes.

Only what a policy needs leaves this module: whether a password is set, locked or empty,
which hashing scheme it uses, and the ageing fields. The hash itself is dropped as soon as
its line is split, and no error message ever quotes a line of /etc/shadow.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.sources.base import Row
from agent.sources.linux.common import make_row, read_required

__all__ = ["collect_shadow", "parse_shadow", "password_status"]

SHADOW_PATH = Path("/etc/shadow")

_HASH_ALG = re.compile(r"^\$(\w+)\$")

#: shadow(5) fields after name and password, in file order, with their column names.
_AGEING_COLUMNS = ("last_change", "min", "max", "warning", "inactive", "expire", "flag")


def password_status(password: str) -> str:
    """osquery's classification of the password field (the order of tests matters)."""
    if password == "!!":
        return "not_set"
    if password.startswith(("!", "*", "x")):
        return "locked"
    if not password:
        return "empty"
    return "active"


def _shadow_row(fields: list[str]) -> Row:
    password = fields[1]
    match = _HASH_ALG.match(password)
    values = {
        "username": fields[0],
        "password_status": password_status(password),
        "hash_alg": match.group(1) if match else "",
    }
    for column, field in zip(_AGEING_COLUMNS, fields[2:], strict=True):
        # getspent(3) reports an empty field as -1, and osquery prints it that way.
        values[column] = field.strip() or "-1"
    return make_row("shadow", values)


def parse_shadow(text: str) -> list[Row]:
    """Rows of a shadow(5) file; lines without the nine fields are skipped."""
    rows = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 9 and fields[0] and not fields[0].startswith(("+", "-", "#")):
            rows.append(_shadow_row(fields))
    return rows


def collect_shadow() -> list[Row]:
    return parse_shadow(read_required(SHADOW_PATH, "shadow"))
