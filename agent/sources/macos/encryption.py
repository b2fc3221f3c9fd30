"""``disk_encryption``: FileVault on the startup volume, from ``fdesetup``.

``fdesetup status`` prints fixed sentences; they map to osquery's columns as follows
(one row for the startup volume, ``name`` its device as the mount table shows it):

==========================================  =========  ================  =================
fdesetup status says                        encrypted  filevault_status  encryption_status
==========================================  =========  ================  =================
FileVault is On.                            1          on                encrypted
FileVault is On. + Encryption in progress   0          on                encrypting
FileVault is Off.                           0          off               undefined
FileVault is Off. + Decryption in progress  0          off               decrypting
FileVault is Off. + Deferred enablement     0          off               deferred
==========================================  =========  ================  =================

A volume still encrypting is not yet protected, so it does not count as encrypted. When
FileVault is on, ``fdesetup list`` (root only) names the users who can unlock the disk:
one row per user, with ``uid`` and ``user_uuid`` (Fleet's FileVault policy requires a
``user_uuid``); with no such user the row keeps them "". Output without a "FileVault is
On."/"Off." sentence is a ProbeError.
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Callable

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.macos.common import make_row

__all__ = [
    "LIST_COMMAND",
    "STATUS_COMMAND",
    "collect_disk_encryption",
    "disk_encryption_rows",
    "filevault_state",
    "parse_fdesetup_list",
]

TABLE = "disk_encryption"
STATUS_COMMAND = ("/usr/bin/fdesetup", "status")
LIST_COMMAND = ("/usr/bin/fdesetup", "list")

_UUID_LINE = re.compile(r"^([^,\s][^,]*),([0-9A-Fa-f-]{36})$")


def filevault_state(output: str) -> tuple[str, str, str]:
    """``(encrypted, filevault_status, encryption_status)`` from ``fdesetup status``."""
    if "FileVault is On." in output:
        if "Encryption in progress" in output:
            return "0", "on", "encrypting"
        return "1", "on", "encrypted"
    if "FileVault is Off." in output:
        if "Decryption in progress" in output:
            return "0", "off", "decrypting"
        if "Deferred enablement" in output:
            return "0", "off", "deferred"
        return "0", "off", "undefined"
    raise ProbeError(f"{TABLE}: unexpected fdesetup status output {output.strip()[:80]!r}")


def parse_fdesetup_list(output: str) -> list[tuple[str, str]]:
    """``(username, uuid)`` for each ``name,UUID`` line of ``fdesetup list``."""
    pairs = []
    for line in output.splitlines():
        match = _UUID_LINE.match(line.strip())
        if match:
            pairs.append((match[1], match[2].upper()))
    return pairs


def _uid(username: str) -> str:
    try:
        return str(pwd.getpwnam(username).pw_uid)
    except KeyError:
        return ""


def disk_encryption_rows(
    status: str, users: list[tuple[str, str]], device: str, uid_of: Callable[[str], str] = _uid
) -> list[Row]:
    encrypted, filevault, encryption = filevault_state(status)
    base = {
        "name": device,
        "encrypted": encrypted,
        "type": "APFS" if encrypted == "1" else "",
        "encryption_status": encryption,
        "filevault_status": filevault,
    }
    if not users:
        return [make_row(TABLE, base)]
    return [
        make_row(TABLE, base | {"uid": uid_of(name), "user_uuid": uuid}) for name, uuid in users
    ]


def collect_disk_encryption(runner: Runner, timeout: float, device: str) -> list[Row]:
    status = runner.run(STATUS_COMMAND, timeout=timeout)
    users: list[tuple[str, str]] = []
    if "FileVault is On." in status:
        users = parse_fdesetup_list(runner.run(LIST_COMMAND, timeout=timeout))
    return disk_encryption_rows(status, users, device)
