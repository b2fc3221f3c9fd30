"""``os_version`` and ``windows_device_join``: which Windows this is, and who manages it.

``os_version`` reads the ``Win32_OperatingSystem`` CIM class (as osquery does) and the
``CurrentVersion`` registry key for what the class lacks, printing them under
``Get-ComputerInfo``'s property names (``Get-ComputerInfo`` itself takes seconds, as it
gathers everything). Columns: ``name`` is the caption ("Microsoft Windows 11 Pro");
``version`` major.minor.build; ``build`` the build number; ``revision`` the update build
revision (UBR: 22631.**3880**), which tells how patched a build is; ``codename`` the
release name ("23H2", from DisplayVersion, or ReleaseId "1909" before 20H2; osquery puts
the caption there, which says nothing the name does not); ``install_date`` Unix seconds;
``arch`` "64-bit".

``windows_device_join`` parses ``dsregcmd /status``: ``Name : VALUE`` lines whose names
are API identifiers (AzureAdJoined, DomainJoined...) and never translated. YES/NO -> 1/0.
"""

from __future__ import annotations

import re

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import (
    Record,
    integer,
    make_row,
    powershell_json,
    run_json,
    text,
    unix_time,
)

__all__ = [
    "DSREGCMD_COMMAND",
    "OS_COMMAND",
    "collect_device_join",
    "collect_os_version",
    "device_join_rows",
    "os_version_rows",
    "parse_dsregcmd",
]

OS_COMMAND = powershell_json(
    "$os = Get-CimInstance -ClassName Win32_OperatingSystem; "
    "$cv = Get-ItemProperty -LiteralPath 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion'; "
    "[pscustomobject]@{ OsName = $os.Caption; OsVersion = $os.Version; "
    "OsBuildNumber = $os.BuildNumber; OsArchitecture = $os.OSArchitecture; "
    "OsInstallDate = $os.InstallDate; WindowsVersion = $cv.ReleaseId; "
    "DisplayVersion = $cv.DisplayVersion; UBR = $cv.UBR }"
)

DSREGCMD_COMMAND = ("dsregcmd.exe", "/status")

_DSREG_FIELDS = {
    "AzureAdJoined": "azure_ad_joined",
    "EnterpriseJoined": "enterprise_joined",
    "DomainJoined": "domain_joined",
    "WorkplaceJoined": "workplace_joined",
    "Device Name": "device_name",
    "TenantName": "tenant_name",
    "DomainName": "domain_name",
}
_YES_NO = {"YES": "1", "NO": "0"}
_DSREG_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?)\s+:\s?(.*?)\s*$")


def os_version_rows(records: list[Record]) -> list[Row]:
    """The one os_version row (from this probe's object or Get-ComputerInfo's JSON)."""
    if len(records) != 1:
        raise ProbeError(f"os_version: expected one object, got {len(records)}")
    record = records[0]
    version = text(record.get("OsVersion"))
    major, minor, build = ([*version.split("."), "", "", ""])[:3]
    install = record.get("OsInstallDate") or record.get("WindowsInstallDateFromRegistry")
    values = {
        "name": text(record.get("OsName")),
        "version": version,
        "major": integer(major),
        "minor": integer(minor),
        "build": text(record.get("OsBuildNumber")) or build,
        "platform": "windows",
        "platform_like": "windows",
        "codename": text(record.get("DisplayVersion")) or text(record.get("WindowsVersion")),
        "arch": text(record.get("OsArchitecture")),
        "install_date": unix_time(install),
        "revision": integer(record.get("UBR")),
    }
    return [make_row("os_version", values)]


def parse_dsregcmd(output: str) -> dict[str, str]:
    """``Name : value`` pairs of ``dsregcmd /status`` (the first of each name)."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        match = _DSREG_LINE.match(line)
        if match:
            fields.setdefault(match[1], match[2])
    return fields


def device_join_rows(output: str) -> list[Row]:
    fields = parse_dsregcmd(output)
    if "AzureAdJoined" not in fields and "DomainJoined" not in fields:
        raise ProbeError("windows_device_join: dsregcmd /status printed no join state")
    values = {}
    for name, column in _DSREG_FIELDS.items():
        value = fields.get(name, "")
        values[column] = _YES_NO.get(value.upper(), "") if column.endswith("_joined") else value
    return [make_row("windows_device_join", values)]


def collect_os_version(runner: Runner, timeout: float) -> list[Row]:
    return os_version_rows(run_json(runner, OS_COMMAND, "os_version", timeout))


def collect_device_join(runner: Runner, timeout: float) -> list[Row]:
    return device_join_rows(runner.run(DSREGCMD_COMMAND, timeout=timeout))
