"""``mdm`` and ``macos_firmware_password``: who manages this Mac, and its firmware lock.

``mdm`` parses ``profiles status -type enrollment``. Since macOS 10.13.4 it prints
``Enrolled via DEP: Yes|No``, ``MDM enrollment: Yes|Yes (User Approved)|No`` and, when
enrolled, ``MDM server: URL``; earlier releases print one sentence:

=====================================================  ========  ================  =========
output                                                 enrolled  installed_from_dep user_app.
=====================================================  ========  ================  =========
MDM enrollment: Yes (User Approved)                    1         from DEP line     1
MDM enrollment: Yes                                    1         from DEP line     0
MDM enrollment: No                                     0         from DEP line     0
An enrollment profile is currently installed ...       1         ""                ""
There is no enrollment profile installed ...           0         ""                ""
=====================================================  ========  ================  =========

``macos_firmware_password`` parses ``firmwarepasswd -check`` ("Password Enabled: Yes|No").
The tool exists on Intel Macs only; on Apple silicon, whose startup security is set in
recoveryOS instead, the table has no row and no command runs. The tool needs root.
"""

from __future__ import annotations

import re

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.macos.common import make_row

__all__ = [
    "FIRMWAREPASSWD_COMMAND",
    "PROFILES_COMMAND",
    "collect_firmware_password",
    "collect_mdm",
    "firmware_password_rows",
    "mdm_rows",
]

PROFILES_COMMAND = ("/usr/bin/profiles", "status", "-type", "enrollment")
FIRMWAREPASSWD_COMMAND = ("/usr/sbin/firmwarepasswd", "-check")

_LEGACY = {
    "An enrollment profile is currently installed on this system": "1",
    "There is no enrollment profile installed on this system": "0",
}
_FIELD = re.compile(r"^\s*(Enrolled via DEP|MDM enrollment|MDM server):\s*(.*?)\s*$")
_FIRMWARE = re.compile(r"^Password Enabled: (Yes|No)\s*$", re.MULTILINE)


def _fields(output: str) -> dict[str, str]:
    fields = {}
    for line in output.splitlines():
        match = _FIELD.match(line)
        if match:
            fields[match[1]] = match[2]
    return fields


def mdm_rows(output: str) -> list[Row]:
    legacy = next((value for text, value in _LEGACY.items() if text in output), None)
    if legacy is not None:
        return [make_row("mdm", {"enrolled": legacy})]
    fields = _fields(output)
    enrollment = fields.get("MDM enrollment")
    if enrollment is None or not enrollment.startswith(("Yes", "No")):
        raise ProbeError(f"mdm: unexpected profiles output {output.strip()[:80]!r}")
    dep = fields.get("Enrolled via DEP", "")
    values = {
        "enrolled": "1" if enrollment.startswith("Yes") else "0",
        "user_approved": "1" if "User Approved" in enrollment else "0",
        "installed_from_dep": {"Yes": "1", "No": "0"}.get(dep, ""),
        "server_url": fields.get("MDM server", ""),
    }
    return [make_row("mdm", values)]


def firmware_password_rows(output: str) -> list[Row]:
    match = _FIRMWARE.search(output)
    if match is None:
        raise ProbeError(f"macos_firmware_password: unexpected output {output.strip()[:80]!r}")
    enabled = "1" if match[1] == "Yes" else "0"
    return [make_row("macos_firmware_password", {"password_enabled": enabled})]


def collect_mdm(runner: Runner, timeout: float) -> list[Row]:
    return mdm_rows(runner.run(PROFILES_COMMAND, timeout=timeout))


def collect_firmware_password(runner: Runner, timeout: float, machine: str) -> list[Row]:
    if machine == "arm64":
        return []
    return firmware_password_rows(runner.run(FIRMWAREPASSWD_COMMAND, timeout=timeout))
