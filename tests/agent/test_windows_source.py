"""The whole Windows source: recorded command output in, catalogue rows or errors out.

Recordings come from ../shared/fixtures/windows where one exists. For commands with no
published recording (group membership, Security Center health, update history, programs,
registry), the JSON below has the shape those scripts print, written from the cmdlets'
documentation; docs/tables.md lists these gaps. Timeouts and failures run real programs:
a stand-in ``powershell.exe`` on PATH that hangs, fails or prints console text.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.collect import collect
from agent.plan import CollectionPlan
from agent.runner import CommandRunner, RecordedRunner
from agent.sources.base import ProbeError, TableRequest
from agent.sources.windows import (
    WindowsNativeSource,
    accounts,
    bitlocker,
    defender,
    firewall,
    firmware,
    registry,
    secpol,
    security_center,
    software,
    system,
    updates,
)
from protos.posture.v1.tables import TABLES, columns_for, platform_tables

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "windows"

REGISTRY_PATHS = (
    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System",
    "HKEY_USERS\\%\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop",
)


def recording(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8").partition("\n")[2]


def format_list_json(name: str) -> str:
    """Format-List recordings (no JSON one is published) as ConvertTo-Json would print them."""
    record: dict[str, object] = {}
    for line in recording(name).splitlines():
        key, _, value = line.partition(" : ")
        value = value.strip()
        if value in ("True", "False"):
            record[key.strip()] = value == "True"
        elif value.isdigit():
            record[key.strip()] = int(value)
        elif key.strip() and value:
            record[key.strip()] = value
    return json.dumps([record])


GROUP_MEMBERS = [
    {
        "Group": "Administrators",
        "GroupSid": "S-1-5-32-544",
        "Name": "PC01\\Administrator",
        "Sid": "S-1-5-21-1-2-3-500",
        "Class": "User",
        "Local": True,
    },
    {
        "Group": "Administrators",
        "GroupSid": "S-1-5-32-544",
        "Name": "CITY\\Domain Admins",
        "Sid": "S-1-5-21-7-8-9-512",
        "Class": "Group",
        "Local": False,
    },
    {
        "Group": "Administrators",
        "GroupSid": "S-1-5-32-544",
        "Name": "S-1-12-1-111-222-333-444",
        "Sid": "S-1-12-1-111-222-333-444",
        "Class": "User",
        "Local": False,
    },
]


class FakeService:
    """psutil's WindowsService as far as the source uses it (the SCM cannot run here)."""

    def __init__(self, info: dict[str, object]) -> None:
        self._info = info

    def as_dict(self) -> dict[str, object]:
        return self._info

    def name(self) -> str:
        return str(self._info["name"])

    def display_name(self) -> str:
        return str(self._info["display_name"])


SERVICES = [
    FakeService(
        {
            "name": "WinDefend",
            "display_name": "Microsoft Defender Antivirus Service",
            "binpath": '"C:\\ProgramData\\Microsoft\\Windows Defender\\MsMpEng.exe"',
            "username": "LocalSystem",
            "start_type": "automatic",
            "status": "running",
            "pid": 3120,
            "description": "Helps protect users from malware",
        }
    ),
    FakeService(
        {
            "name": "RemoteRegistry",
            "display_name": "Remote Registry",
            "binpath": "C:\\Windows\\system32\\svchost.exe -k localService -p",
            "username": "NT AUTHORITY\\LocalService",
            "start_type": "disabled",
            "status": "stopped",
            "pid": None,
            "description": "",
        }
    ),
]


def recordings() -> dict[tuple[str, ...], str | ProbeError]:
    computer_info = json.loads(recording("get-computerinfo.json"))
    registry_values = [
        {
            "Key": REGISTRY_PATHS[0],
            "Name": "EnableLUA",
            "Kind": "DWord",
            "Data": 1,
        },
        {
            "Key": REGISTRY_PATHS[1].replace("%", "S-1-5-21-1-2-3-1001"),
            "Name": "ScreenSaveTimeOut",
            "Kind": "String",
            "Data": "600",
        },
    ]
    return {
        system.OS_COMMAND: json.dumps(computer_info),
        system.DSREGCMD_COMMAND: recording("dsregcmd-status-not-joined.txt"),
        accounts.USERS_COMMAND: recording("get-localuser.json"),
        accounts.GROUPS_COMMAND: json.dumps(
            [
                {
                    "Name": "Administrators",
                    "Description": "Full control",
                    "SID": {"Value": "S-1-5-32-544"},
                }
            ]
        ),
        accounts.MEMBERS_COMMAND: json.dumps(GROUP_MEMBERS),
        bitlocker.COMMAND: recording("bitlocker-win32-encryptablevolume.json"),
        security_center.PRODUCTS_COMMAND: recording("securitycenter2-antivirusproduct.json"),
        security_center.CENTER_COMMAND: json.dumps(
            [
                {
                    "firewall": 0,
                    "autoupdate": 0,
                    "antivirus": 0,
                    "internet_settings": 0,
                    "user_account_control": 0,
                    "windows_security_center_service": 0,
                }
            ]
        ),
        defender.COMMAND: format_list_json("get-mpcomputerstatus.txt"),
        firewall.COMMAND: recording("get-netfirewallprofile.json"),
        updates.HOTFIX_COMMAND: json.dumps(computer_info["OsHotFixes"]),
        updates.HISTORY_COMMAND: json.dumps(
            [
                {
                    "Date": "2024-06-11T17:00:00Z",
                    "Operation": 1,
                    "ResultCode": 2,
                    "Title": "KB5039212",
                }
            ]
        ),
        secpol.COMMAND: recording("secedit-export-cfg.txt"),
        firmware.SECUREBOOT_COMMAND: recording("confirm-securebootuefi.txt"),
        firmware.TPM_COMMAND: format_list_json("get-tpm.txt"),
        software.COMMAND: json.dumps(
            [
                {
                    "DisplayName": "Mozilla Firefox (x64 en-US)",
                    "DisplayVersion": "127.0",
                    "Publisher": "Mozilla",
                    "PSChildName": "Mozilla Firefox 127.0 (x64 en-US)",
                },
                {
                    "DisplayName": "7-Zip 23.01 (x64 edition)",
                    "DisplayVersion": "23.01.00.0",
                    "InstallDate": "20240115",
                    "PSChildName": "{23170F69-40C1-2702-2301-000001000000}",
                },
            ]
        ),
        registry.registry_command(REGISTRY_PATHS): json.dumps(registry_values),
    }


@pytest.fixture
def runner() -> RecordedRunner:
    return RecordedRunner(recordings())


@pytest.fixture
def source(runner: RecordedRunner) -> WindowsNativeSource:
    return WindowsNativeSource(runner, platform="windows", services=lambda: SERVICES)


def request(table: str) -> TableRequest:
    return TableRequest(table, paths=REGISTRY_PATHS if table == "registry" else ())


def test_not_available_off_windows() -> None:
    native = WindowsNativeSource(RecordedRunner({}), platform="linux")
    assert not native.available() and native.tables() == frozenset()
    with pytest.raises(ProbeError, match="cannot produce os_version"):
        native.collect(TableRequest("os_version"))


def test_every_table_from_recordings_has_the_catalogue_columns(
    source: WindowsNativeSource,
) -> None:
    for table in sorted(source.tables()):
        rows = source.collect(request(table))
        assert rows, table
        for row in rows:
            assert tuple(row) == columns_for(table, "windows"), table
            assert all(isinstance(value, str) for value in row.values()), table


def test_source_covers_the_issue_tables_and_every_windows_extension(
    source: WindowsNativeSource,
) -> None:
    issue_tables = {
        "bitlocker_info", "windows_security_center", "windows_security_products", "patches",
        "windows_update_history", "users", "groups", "user_groups", "security_profile_info",
        "registry", "services", "secureboot", "tpm_info", "programs",
        "windows_firewall_profiles",
    }  # fmt: skip
    extensions = {
        table.name
        for table in platform_tables("windows")
        if table.posture_extension and table.name != "file_lines"
    }
    assert issue_tables | extensions <= source.tables()
    assert all(table in TABLES for table in source.tables())


def test_administrators_include_domain_and_unresolved_members(source: WindowsNativeSource) -> None:
    members = source.collect(TableRequest("windows_local_group_members"))
    assert [(m["member_name"], m["member_type"], m["local"]) for m in members] == [
        ("PC01\\Administrator", "User", "1"),
        ("CITY\\Domain Admins", "Group", "0"),
        ("S-1-12-1-111-222-333-444", "User", "0"),
    ]
    # osquery's user_groups keeps local users only.
    assert source.collect(TableRequest("user_groups")) == [{"uid": "500", "gid": "544"}]


def test_services_translate_psutil_values(source: WindowsNativeSource) -> None:
    defender_service, remote_registry = source.collect(TableRequest("services"))
    assert (
        defender_service["status"] == "RUNNING" and defender_service["start_type"] == "AUTO_START"
    )
    assert defender_service["pid"] == "3120" and defender_service["user_account"] == "LocalSystem"
    assert remote_registry["status"] == "STOPPED" and remote_registry["start_type"] == "DISABLED"
    assert remote_registry["pid"] == ""


def test_services_need_windows_or_a_replacement() -> None:
    native = WindowsNativeSource(RecordedRunner({}), platform="windows")
    with pytest.raises(ProbeError, match="cannot list Windows services"):
        native.collect(TableRequest("services"))


def test_programs_keep_product_codes_only(source: WindowsNativeSource) -> None:
    firefox, seven_zip = source.collect(TableRequest("programs"))
    assert firefox["identifying_number"] == ""
    assert seven_zip["identifying_number"] == "{23170F69-40C1-2702-2301-000001000000}"
    assert seven_zip["install_date"] == "20240115"


def test_registry_rows_for_the_plans_keys(source: WindowsNativeSource) -> None:
    rows = source.collect(request("registry"))
    assert [(row["name"], row["type"], row["data"]) for row in rows] == [
        ("EnableLUA", "REG_DWORD", "1"),
        ("ScreenSaveTimeOut", "REG_SZ", "600"),
    ]
    assert rows[0]["path"] == REGISTRY_PATHS[0] + "\\EnableLUA"


def test_registry_without_paths_runs_nothing(runner: RecordedRunner) -> None:
    native = WindowsNativeSource(runner, platform="windows")
    assert native.collect(TableRequest("registry")) == []
    assert runner.calls == []


def test_registry_command_reads_keys_and_named_values() -> None:
    script = registry.registry_command(
        ["HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\O'Brien [x]\\Value%", "HKEY_USERS\\%\\Desk"]
    )[-1]
    assert (
        "@{ Key = 'HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\O''Brien `[x`]\\Value*'; Value = '*' }"
        in script
    )
    assert (
        "@{ Key = 'HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\O''Brien `[x`]'; Value = 'Value*' }"
        in script
    )
    assert "@{ Key = 'HKEY_USERS\\*\\Desk'; Value = '*' }" in script
    assert '"' not in script
    with pytest.raises(ProbeError, match="hive name"):
        registry.registry_command(["SOFTWARE\\Policies"])


def test_registry_values_are_written_as_osquery_writes_them() -> None:
    key = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Test"
    records: list[dict[str, Any]] = [
        {"Key": key, "Name": "", "Kind": "String", "Data": "default"},
        {"Key": key, "Name": "Mask", "Kind": "DWord", "Data": -1},
        {"Key": key, "Name": "Big", "Kind": "QWord", "Data": -2},
        {"Key": key, "Name": "Blob", "Kind": "Binary", "Data": [0, 171, 255]},
        {"Key": key, "Name": "List", "Kind": "MultiString", "Data": ["a", "b"]},
        {"Key": key, "Name": "Path", "Kind": "ExpandString", "Data": "%SystemRoot%\\x"},
        {"Key": key.lower(), "Name": "list", "Kind": "MultiString", "Data": ["a", "b"]},
    ]
    rows = {row["name"]: row for row in registry.registry_rows(records)}
    assert rows["(Default)"]["path"] == key + "\\(Default)"
    assert rows["Mask"]["data"] == "-1"
    assert rows["Big"]["data"] == str(2**64 - 2)
    assert rows["Blob"]["data"] == "00ABFF" and rows["Blob"]["type"] == "REG_BINARY"
    assert rows["Path"]["data"] == "%SystemRoot%\\x" and rows["Path"]["type"] == "REG_EXPAND_SZ"
    assert len(rows) == 6  # the same value named twice (any case) is one row
    assert rows["list"]["data"] == "a,b"


def test_every_powershell_probe_asks_for_json_and_quotes_nothing() -> None:
    commands = [command for command in recordings() if command[0] == "powershell.exe"]
    assert len(commands) >= 15
    for command in commands:
        assert command[1:4] == ("-NoProfile", "-NonInteractive", "-Command")
        assert "$ErrorActionPreference = 'Stop'" in command[4]
        assert '"' not in command[4]
    texts = {secpol.COMMAND, firmware.SECUREBOOT_COMMAND}
    assert all("ConvertTo-Json -InputObject" in c[4] for c in commands if c not in texts)


def test_a_failed_probe_is_that_tables_error_and_the_others_still_come() -> None:
    recorded = recordings()
    recorded[bitlocker.COMMAND] = ProbeError(
        "powershell.exe exited with status 1: Get-CimInstance : Access denied"
    )
    recorded[defender.COMMAND] = ProbeError(
        "powershell.exe did not finish within 60 s and was killed"
    )
    native = WindowsNativeSource(
        RecordedRunner(recorded), platform="windows", services=lambda: SERVICES
    )
    plan = CollectionPlan(
        "v1",
        300,
        tuple(request(t) for t in ("bitlocker_info", "windows_defender_status", "secureboot")),
    )
    result = collect(plan, [native])
    assert result.tables["bitlocker_info"].error == (
        "native: powershell.exe exited with status 1: Get-CimInstance : Access denied"
    )
    assert result.tables["bitlocker_info"].rows == []
    assert "did not finish within 60 s" in result.tables["windows_defender_status"].error
    assert result.tables["secureboot"].rows == [{"secure_boot": "1", "setup_mode": ""}]


def test_malformed_json_shapes_become_probe_errors() -> None:
    recorded = recordings()
    recorded[bitlocker.COMMAND] = '[{"volume": "not an object"}]'
    recorded[firewall.COMMAND] = "[]"
    recorded[defender.COMMAND] = "[1, 2]"
    native = WindowsNativeSource(RecordedRunner(recorded), platform="windows")
    with pytest.raises(ProbeError, match="bitlocker_info: AttributeError"):
        native.collect(TableRequest("bitlocker_info"))
    with pytest.raises(ProbeError, match="returned no profiles"):
        native.collect(TableRequest("windows_firewall_profiles"))
    with pytest.raises(ProbeError, match="not a list of objects"):
        native.collect(TableRequest("windows_defender_status"))


@pytest.fixture
def fake_powershell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH, where tests put a stand-in ``powershell.exe``."""
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path / "powershell.exe"


def install(script: Path, body: str) -> None:
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="stand-in is a shell script")


@posix_only
def test_a_hung_powershell_is_killed_and_reported(fake_powershell: Path) -> None:
    install(fake_powershell, "sleep 30\n")
    native = WindowsNativeSource(CommandRunner(), platform="windows", timeout=0.3)
    with pytest.raises(ProbeError, match=r"powershell\.exe did not finish within 0\.3 s"):
        native.collect(TableRequest("windows_firewall_profiles"))


@posix_only
def test_console_text_instead_of_json_is_refused(fake_powershell: Path) -> None:
    sample = FIXTURES / "get-netfirewallprofile-all-disabled.txt"
    install(fake_powershell, f"tail -n +2 '{sample}'\n")
    native = WindowsNativeSource(CommandRunner(), platform="windows")
    with pytest.raises(ProbeError, match="did not print JSON: 'Name : Domain Enabled : False"):
        native.collect(TableRequest("windows_firewall_profiles"))


@posix_only
def test_a_failing_cmdlet_reports_its_message(fake_powershell: Path) -> None:
    install(fake_powershell, "echo 'Get-MpComputerStatus : 0x800106ba' >&2\nexit 1\n")
    native = WindowsNativeSource(CommandRunner(), platform="windows")
    with pytest.raises(ProbeError, match="exited with status 1: Get-MpComputerStatus : 0x800106ba"):
        native.collect(TableRequest("windows_defender_status"))


@posix_only
def test_the_real_runner_passes_the_script_as_one_argument(fake_powershell: Path) -> None:
    install(fake_powershell, 'printf \'[{"Name": "%s"}]\' "$#"\n')
    native = WindowsNativeSource(CommandRunner(), platform="windows")
    rows = native.collect(TableRequest("groups"))
    assert rows[0]["groupname"] == "4"  # -NoProfile -NonInteractive -Command SCRIPT


def test_missing_powershell_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    native = WindowsNativeSource(CommandRunner(), platform="windows")
    with pytest.raises(ProbeError, match=r"powershell\.exe is not installed"):
        native.collect(TableRequest("tpm_info"))
