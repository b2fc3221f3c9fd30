"""``users``, ``groups``, ``user_groups`` and ``windows_local_group_members``.

Local accounts come from ``Get-LocalUser`` and ``Get-LocalGroup`` (JSON). As in osquery,
``uid``/``gid`` are the relative identifiers (the last part of the SID: 500 for the
built-in Administrator, 544 for Administrators), ``uuid``/``group_sid`` the whole SID, and
``users`` lists local accounts with ``type = local``. The primary group, profile directory
and shell are not read ("").

Group membership is read through ADSI (``[ADSI]'WinNT://COMPUTER/GROUP,group'``
``Members``) rather than ``Get-LocalGroupMember``, which fails outright on a group holding
a SID that no longer resolves, as Administrators does on many Microsoft Entra-joined
laptops: a failure there would hide exactly the members a policy looks for. Each member's
SID is translated to ``DOMAIN\\name`` where Windows can; otherwise the SID itself is the
name. ``windows_local_group_members`` lists every member; ``user_groups`` keeps the local
users among them (osquery's semantics: members from a domain or Entra ID have no local
uid), so "who is an administrator" must read ``windows_local_group_members``.
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import Row
from agent.sources.windows.common import (
    Record,
    flag,
    make_row,
    powershell_json,
    run_json,
    text,
)

__all__ = [
    "GROUPS_COMMAND",
    "MEMBERS_COMMAND",
    "USERS_COMMAND",
    "collect_group_members",
    "collect_groups",
    "collect_user_groups",
    "collect_users",
    "group_member_rows",
    "group_rows",
    "user_group_rows",
    "user_rows",
]

USERS_COMMAND = powershell_json(
    "Get-LocalUser | Select-Object Name, Description, Enabled, FullName, SID, PrincipalSource"
)
GROUPS_COMMAND = powershell_json("Get-LocalGroup | Select-Object Name, Description, SID")
MEMBERS_COMMAND = powershell_json(
    "$machine = (Get-LocalUser | Select-Object -First 1).SID.AccountDomainSid.Value; "
    "Get-LocalGroup | ForEach-Object { $group = $_; "
    "$adsi = [ADSI]('WinNT://' + $env:COMPUTERNAME + '/' + $group.Name + ',group'); "
    "foreach ($member in @($adsi.Invoke('Members'))) { $type = $member.GetType(); "
    "$bytes = $type.InvokeMember('objectSid', 'GetProperty', $null, $member, $null); "
    "$sid = New-Object System.Security.Principal.SecurityIdentifier($bytes, 0); "
    "try { $name = $sid.Translate([System.Security.Principal.NTAccount]).Value } "
    "catch { $name = $sid.Value }; "
    "[pscustomobject]@{ Group = $group.Name; GroupSid = $group.SID.Value; Name = $name; "
    "Sid = $sid.Value; Class = $type.InvokeMember('Class', 'GetProperty', $null, $member, $null); "
    "Local = ($null -ne $sid.AccountDomainSid -and $sid.AccountDomainSid.Value -eq $machine) "
    "} } }"
)


def _sid(value: object) -> str:
    """A SID from Get-LocalUser's JSON: ``{"Value": "S-1-..."}`` or the bare string."""
    if isinstance(value, dict):
        return text(value.get("Value"))
    return text(value)


def _rid(sid: str) -> str:
    """The relative identifier: the SID's last part, when it is a number."""
    last = sid.rsplit("-", 1)[-1]
    return last if sid.startswith("S-") and last.isdigit() else ""


def user_rows(records: list[Record]) -> list[Row]:
    rows = []
    for record in records:
        sid = _sid(record.get("SID"))
        values = {
            "uid": _rid(sid),
            "uid_signed": _rid(sid),
            "username": text(record.get("Name")),
            "description": text(record.get("Description")),
            "uuid": sid,
            "type": "local",
        }
        rows.append(make_row("users", values))
    return rows


def group_rows(records: list[Record]) -> list[Row]:
    rows = []
    for record in records:
        sid = _sid(record.get("SID"))
        values = {
            "gid": _rid(sid),
            "gid_signed": _rid(sid),
            "groupname": text(record.get("Name")),
            "group_sid": sid,
            "comment": text(record.get("Description")),
        }
        rows.append(make_row("groups", values))
    return rows


def group_member_rows(records: list[Record]) -> list[Row]:
    return [
        make_row(
            "windows_local_group_members",
            {
                "groupname": text(record.get("Group")),
                "group_sid": text(record.get("GroupSid")),
                "member_name": text(record.get("Name")),
                "member_sid": text(record.get("Sid")),
                "member_type": text(record.get("Class")),
                "local": flag(record.get("Local")),
            },
        )
        for record in records
    ]


def user_group_rows(records: list[Record]) -> list[Row]:
    """(uid, gid) for each local user in each local group."""
    return [
        make_row(
            "user_groups",
            {"uid": _rid(text(record.get("Sid"))), "gid": _rid(text(record.get("GroupSid")))},
        )
        for record in records
        if record.get("Local") is True and record.get("Class") == "User"
    ]


def collect_users(runner: Runner, timeout: float) -> list[Row]:
    return user_rows(run_json(runner, USERS_COMMAND, "users", timeout))


def collect_groups(runner: Runner, timeout: float) -> list[Row]:
    return group_rows(run_json(runner, GROUPS_COMMAND, "groups", timeout))


def collect_group_members(runner: Runner, timeout: float) -> list[Row]:
    return group_member_rows(
        run_json(runner, MEMBERS_COMMAND, "windows_local_group_members", timeout)
    )


def collect_user_groups(runner: Runner, timeout: float) -> list[Row]:
    return user_group_rows(run_json(runner, MEMBERS_COMMAND, "user_groups", timeout))
