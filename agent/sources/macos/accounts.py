"""``users``, ``groups`` and ``user_groups`` on macOS, through the C library.

``getpwent``/``getgrent`` on macOS answer from Open Directory's local node (the same
records ``dscl . list /Users`` shows, service accounts such as ``_www`` included), so
Python's ``pwd`` and ``grp`` read them without starting ``dscl`` for every record. Group
membership is each group's GroupMembership list plus every user's primary group, so
``user_groups`` joined with ``groups`` answers "who is in admin". Not read: ``uuid``
(GeneratedUID) and ``is_hidden``, which need dscl per record ("" here); members added to a
group by GeneratedUID only (nested groups) are not listed.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable

from agent.sources.base import Row
from agent.sources.macos.common import make_row

__all__ = ["collect_groups", "collect_user_groups", "collect_users", "user_group_rows"]


def _signed(number: int) -> str:
    """The id as a signed 32-bit number (nobody's uid 4294967294 is -2)."""
    return str(number - 2**32 if number >= 2**31 else number)


def collect_users(users: Iterable[pwd.struct_passwd] | None = None) -> list[Row]:
    return [
        make_row(
            "users",
            {
                "uid": str(user.pw_uid),
                "gid": str(user.pw_gid),
                "uid_signed": _signed(user.pw_uid),
                "gid_signed": _signed(user.pw_gid),
                "username": user.pw_name,
                "description": user.pw_gecos,
                "directory": user.pw_dir,
                "shell": user.pw_shell,
            },
        )
        for user in (pwd.getpwall() if users is None else users)
    ]


def collect_groups(groups: Iterable[grp.struct_group] | None = None) -> list[Row]:
    return [
        make_row(
            "groups",
            {
                "gid": str(group.gr_gid),
                "gid_signed": _signed(group.gr_gid),
                "groupname": group.gr_name,
            },
        )
        for group in (grp.getgrall() if groups is None else groups)
    ]


def user_group_rows(
    users: Iterable[pwd.struct_passwd], groups: Iterable[grp.struct_group]
) -> list[Row]:
    """(uid, gid) pairs: primary groups, then listed memberships, each pair once."""
    users = list(users)
    uid_of = {user.pw_name: user.pw_uid for user in users}
    pairs = {(user.pw_uid, user.pw_gid) for user in users}
    for group in groups:
        pairs |= {(uid_of[name], group.gr_gid) for name in group.gr_mem if name in uid_of}
    return [
        make_row("user_groups", {"uid": str(uid), "gid": str(gid)}) for uid, gid in sorted(pairs)
    ]


def collect_user_groups() -> list[Row]:
    return user_group_rows(pwd.getpwall(), grp.getgrall())
