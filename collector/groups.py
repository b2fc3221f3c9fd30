"""Groups (city departments): which hosts belong to which, at any instant.

A host joins a group in two ways: through the enroll secret it enrolled with (a secret
created with ``--group Police`` puts every host enrolled with it in Police, for good), and
through label rules that match its hostname (``group rule add Finance --hostname 'fin-*'``).
Rules are never edited, only added and deleted, each with its time, so membership at a past
instant is known exactly and reports as of a date group hosts as they were grouped then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase

__all__ = ["GroupRule", "host_groups", "valid_group_name"]


@dataclass(frozen=True)
class GroupRule:
    """Hosts whose hostname matches ``hostname_glob`` (shell-style, case-insensitive) belong
    to ``group`` from ``created_at`` until ``deleted_at``."""

    id: int
    group: str
    hostname_glob: str
    created_at: datetime
    created_by: str
    deleted_at: datetime | None = None
    deleted_by: str | None = None

    def active_at(self, at: datetime) -> bool:
        return self.created_at <= at and (self.deleted_at is None or self.deleted_at > at)

    def matches(self, hostname: str) -> bool:
        return fnmatchcase(hostname.lower(), self.hostname_glob.lower())


def host_groups(
    hostname: str, secret_group: str | None, rules: Iterable[GroupRule], at: datetime
) -> tuple[str, ...]:
    """The groups a host belongs to at ``at``, sorted."""
    groups = {rule.group for rule in rules if rule.active_at(at) and rule.matches(hostname)}
    if secret_group:
        groups.add(secret_group)
    return tuple(sorted(groups))


def valid_group_name(name: str) -> bool:
    """Group names are what people type: letters, digits, spaces, ``-``, ``_``, ``.``."""
    return bool(name) and len(name) <= 64 and all(c.isalnum() or c in " -_." for c in name)
