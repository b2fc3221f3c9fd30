"""Local accounts: ``users``, ``groups``, ``user_groups`` and ``logged_in_users``.

Users and groups are read from /etc/passwd and /etc/group themselves rather than through
NSS (``pwd.getpwall``): the checks ask about *local* accounts (an unexpected UID 0, a member
of sudo), and enumerating a directory service (LDAP, SSSD) from a laptop every five minutes
would be slow, would fail offline, and is not what those checks mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import psutil

from agent.sources.base import Row
from agent.sources.linux.common import make_row, read_required

__all__ = [
    "GroupEntry",
    "PasswdEntry",
    "collect_groups",
    "collect_logged_in_users",
    "collect_user_groups",
    "collect_users",
    "group_rows",
    "parse_group",
    "parse_passwd",
    "read_passwd",
    "user_group_rows",
    "user_rows",
]

PASSWD_PATH = Path("/etc/passwd")
GROUP_PATH = Path("/etc/group")


class PasswdEntry(NamedTuple):
    username: str
    uid: int
    gid: int
    gecos: str
    directory: str
    shell: str


class GroupEntry(NamedTuple):
    groupname: str
    gid: int
    members: tuple[str, ...]


def _signed32(value: int) -> int:
    """How a 32-bit id reads as a signed int (osquery's uid_signed: 4294967294 -> -2)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd(5) file; NIS ``+``/``-`` lines and malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) != 7 or fields[0].startswith(("+", "-", "#")):
            continue
        name, _, uid, gid, gecos, directory, shell = fields
        if not (uid.isdigit() and gid.isdigit()):
            continue
        entries.append(PasswdEntry(name, int(uid), int(gid), gecos, directory, shell))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group(5) file; NIS ``+``/``-`` lines and malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) != 4 or fields[0].startswith(("+", "-", "#")) or not fields[2].isdigit():
            continue
        members = tuple(member.strip() for member in fields[3].split(",") if member.strip())
        entries.append(GroupEntry(fields[0], int(fields[2]), members))
    return entries


def user_rows(entries: list[PasswdEntry]) -> list[Row]:
    return [
        make_row(
            "users",
            {
                "uid": str(entry.uid),
                "gid": str(entry.gid),
                "uid_signed": str(_signed32(entry.uid)),
                "gid_signed": str(_signed32(entry.gid)),
                "username": entry.username,
                "description": entry.gecos,
                "directory": entry.directory,
                "shell": entry.shell,
            },
        )
        for entry in entries
    ]


def group_rows(entries: list[GroupEntry]) -> list[Row]:
    return [
        make_row(
            "groups",
            {
                "gid": str(entry.gid),
                "gid_signed": str(_signed32(entry.gid)),
                "groupname": entry.groupname,
            },
        )
        for entry in entries
    ]


def user_group_rows(users: list[PasswdEntry], groups: list[GroupEntry]) -> list[Row]:
    """Each user's primary group plus the groups listing them, as getgrouplist(3) reports."""
    memberships: dict[str, list[int]] = {}
    for group in groups:
        for member in group.members:
            memberships.setdefault(member, []).append(group.gid)
    rows = []
    for user in users:
        seen: set[int] = set()
        for gid in [user.gid, *memberships.get(user.username, [])]:
            if gid not in seen:
                seen.add(gid)
                rows.append(make_row("user_groups", {"uid": str(user.uid), "gid": str(gid)}))
    return rows


def read_passwd(table: str = "users") -> list[PasswdEntry]:
    """This machine's local users; a ProbeError naming ``table`` when unreadable."""
    return parse_passwd(read_required(PASSWD_PATH, table))


def collect_users() -> list[Row]:
    return user_rows(read_passwd())


def collect_groups() -> list[Row]:
    return group_rows(parse_group(read_required(GROUP_PATH, "groups")))


def collect_user_groups() -> list[Row]:
    groups = parse_group(read_required(GROUP_PATH, "user_groups"))
    return user_group_rows(read_passwd("user_groups"), groups)


def collect_logged_in_users() -> list[Row]:
    """Interactive sessions from utmp (psutil lists USER_PROCESS entries only: type "user")."""
    return [
        make_row(
            "logged_in_users",
            {
                "type": "user",
                "user": session.name,
                "tty": session.terminal or "",
                "host": session.host or "",
                "time": str(int(session.started)),
                "pid": str(session.pid) if session.pid is not None else "",
            },
        )
        for session in psutil.users()
    ]
