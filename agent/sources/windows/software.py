"""``programs``: installed software, from the registry's Uninstall keys as osquery reads them.

Windows Installer and most other installers register programs under
``...\\CurrentVersion\\Uninstall`` in HKLM (64- and 32-bit views) and, for per-user
installs, in each loaded user hive (``HKEY_USERS\\<SID>``). Entries without a DisplayName
are components, not programs, and are left out, as Programs and Features leaves them out.
``identifying_number`` is the entry's key name when it is a product code (``{GUID}``);
``install_date`` is the installer's ``yyyyMMdd`` text. A hive path that does not exist
(no 32-bit view on 32-bit Windows) is skipped; unreadable entries are skipped likewise.
"""

from __future__ import annotations

import re

from agent.runner import Runner
from agent.sources.base import Row
from agent.sources.windows.common import Record, make_row, powershell_json, run_json, text

__all__ = ["COMMAND", "collect_programs", "program_rows"]

_UNINSTALL = "Microsoft\\Windows\\CurrentVersion\\Uninstall\\*"
_LOCATIONS = (
    f"HKEY_LOCAL_MACHINE\\SOFTWARE\\{_UNINSTALL}",
    f"HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\{_UNINSTALL}",
    f"HKEY_USERS\\*\\Software\\{_UNINSTALL}",
)

COMMAND = powershell_json(
    "Get-ItemProperty -Path "
    + ", ".join(f"'Registry::{location}'" for location in _LOCATIONS)
    + " -ErrorAction SilentlyContinue | Where-Object { $_.DisplayName } | Select-Object "
    "DisplayName, DisplayVersion, InstallLocation, InstallSource, Language, Publisher, "
    "UninstallString, InstallDate, PSChildName"
)

_PRODUCT_CODE = re.compile(r"^\{[0-9A-Fa-f-]{36}\}$")


def program_rows(records: list[Record]) -> list[Row]:
    rows = []
    for record in records:
        key = text(record.get("PSChildName"))
        values = {
            "name": text(record.get("DisplayName")),
            "version": text(record.get("DisplayVersion")),
            "install_location": text(record.get("InstallLocation")),
            "install_source": text(record.get("InstallSource")),
            "language": text(record.get("Language")),
            "publisher": text(record.get("Publisher")),
            "uninstall_string": text(record.get("UninstallString")),
            "install_date": text(record.get("InstallDate")),
            "identifying_number": key if _PRODUCT_CODE.match(key) else "",
        }
        rows.append(make_row("programs", values))
    return rows


def collect_programs(runner: Runner, timeout: float) -> list[Row]:
    return program_rows(run_json(runner, COMMAND, "programs", timeout))
