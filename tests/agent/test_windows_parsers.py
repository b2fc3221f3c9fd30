"""Windows parsers against the published recordings in ../shared/fixtures/windows.

Every recording is either parsed into its table here, or listed in CONSOLE_SAMPLES with
the reason the agent never parses that form (translated or formatted for a terminal).
Two cmdlets (Get-MpComputerStatus, Get-Tpm) have only Format-List recordings; their
values are carried into the JSON shape ConvertTo-Json prints (``format_list_as_json``)
so the parsers still meet real values.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.sources.base import ProbeError
from agent.sources.windows import (
    accounts,
    bitlocker,
    defender,
    firewall,
    firmware,
    secpol,
    security_center,
    system,
    updates,
)
from agent.sources.windows.common import json_records
from protos.posture.v1.tables import columns_for

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "windows"

#: Recordings the agent must never parse, and why (each is tested to be refused).
CONSOLE_SAMPLES = {
    "manage-bde-status-de-DE.txt": "translated labels and values (German)",
    "get-bitlockervolume-format-list.txt": "Format-List text, decimal comma",
    "get-bitlockervolume-table.txt": "console table, truncated columns",
    "get-netfirewallprofile-all-disabled.txt": "Format-List text, enum names",
    "get-netfirewallprofile-domain-enabled.txt": "Format-List text, enum names",
    "get-hotfix.txt": "console table",
    "get-localuser-builtin-admin.txt": "console table",
    "get-computerinfo-version.txt": "Format-List text",
    "auditpol-get-category-all-r.csv": "setting names are translated on non-English Windows",
}
#: Format-List recordings whose values are tested through format_list_as_json.
FORMAT_LIST_SAMPLES = {"get-mpcomputerstatus.txt", "get-mpcomputerstatus-legacy.txt", "get-tpm.txt"}
PARSED = {
    "get-netfirewallprofile.json",
    "bitlocker-win32-encryptablevolume.json",
    "securitycenter2-antivirusproduct.json",
    "get-localuser.json",
    "secedit-export-cfg.txt",
    "get-computerinfo.json",
    "dsregcmd-status-not-joined.txt",
    "confirm-securebootuefi.txt",
}


def recording(name: str) -> str:
    """A fixture without its first ``# source:`` line."""
    first, _, rest = (FIXTURES / name).read_text(encoding="utf-8").partition("\n")
    assert first.startswith("# source:"), name
    return rest


def format_list_as_json(text: str) -> str:
    """A Format-List recording as ConvertTo-Json would print the same object.

    Booleans and whole numbers become JSON ones, empty values null, and US-style times
    "6/4/2024 8:06:27 AM" PowerShell 5.1's "/Date(ms)/" (the recordings do not say their
    zone; UTC is assumed).
    """
    record: dict[str, object] = {}
    for line in text.splitlines():
        name, separator, value = line.partition(" : ")
        if not separator and line.rstrip().endswith(" :"):
            name, value = line.rstrip()[:-2], ""
        elif not separator:
            continue
        record[name.strip()] = _typed(value.strip())
    return json.dumps([record])


def _typed(value: str) -> object:
    if value in ("True", "False"):
        return value == "True"
    if re.fullmatch(r"\d+", value):
        return int(value)
    if not value:
        return None
    try:
        moment = datetime.strptime(value, "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)
    except ValueError:
        return value
    return f"/Date({int(moment.timestamp()) * 1000})/"


def test_every_recording_is_parsed_or_refused_for_a_stated_reason() -> None:
    names = {path.name for path in FIXTURES.iterdir()}
    assert names == PARSED | FORMAT_LIST_SAMPLES | set(CONSOLE_SAMPLES)


@pytest.mark.parametrize("name", sorted(CONSOLE_SAMPLES))
def test_console_and_translated_samples_are_refused_as_json(name: str) -> None:
    with pytest.raises(ProbeError, match="did not print JSON"):
        json_records(recording(name), "t")


def test_german_manage_bde_is_why_bitlocker_reads_cim_numbers() -> None:
    sample = recording("manage-bde-status-de-DE.txt")
    assert "Schutzstatus" in sample and "Protection Status" not in sample
    assert "Win32_EncryptableVolume" in bitlocker.COMMAND[-1]
    assert "manage-bde" not in bitlocker.COMMAND[-1]


def test_firewall_profiles_decode_cim_numbers() -> None:
    rows = firewall.firewall_profile_rows(
        json_records(recording("get-netfirewallprofile.json"), "t")
    )
    assert [row["profile_name"] for row in rows] == ["Private", "Public"]
    private = rows[0]
    assert tuple(private) == columns_for("windows_firewall_profiles", "windows")
    assert private["enabled"] == "1"
    assert private["default_inbound_action"] == "NotConfigured"  # 0
    assert private["allow_inbound_rules"] == ""  # 2 = NotConfigured
    assert private["notify_on_listen"] == "0" and private["log_blocked"] == "0"
    assert private["log_max_size_kilobytes"] == "4096"
    assert private["log_file_name"].endswith("pfirewall.log")


def test_firewall_enum_names_decode_like_numbers() -> None:
    record = {"Name": "Domain", "Enabled": "False", "DefaultInboundAction": "Block"}
    named = firewall.firewall_profile_rows([record | {"DefaultOutboundAction": 2}])[0]
    assert (named["enabled"], named["default_inbound_action"]) == ("0", "Block")
    assert named["default_outbound_action"] == "Allow"


def test_firewall_unknown_enum_value_is_an_error_not_a_guess() -> None:
    with pytest.raises(ProbeError, match="unexpected Enabled value 7"):
        firewall.firewall_profile_rows([{"Name": "Public", "Enabled": 7}])


def test_firewall_reads_the_active_store() -> None:
    assert "-PolicyStore ActiveStore" in firewall.COMMAND[-1]


def test_bitlocker_volumes_as_osquery_reports_them() -> None:
    rows = bitlocker.bitlocker_rows(
        json_records(recording("bitlocker-win32-encryptablevolume.json"), "t")
    )
    system_drive, data = rows
    assert system_drive["drive_letter"] == "C:"
    assert system_drive["device_id"] == "\\\\?\\Volume{1b7897f7-3916-496c-91de-704fde33dde9}\\"
    assert system_drive["persistent_volume_id"] == "{ACCDB443-A545-4139-A2DC-A07588D785D8}"
    assert (system_drive["conversion_status"], system_drive["protection_status"]) == ("1", "1")
    assert system_drive["encryption_method"] == "XTS_AES_128"
    assert (system_drive["version"], system_drive["percentage_encrypted"]) == ("2", "100")
    assert system_drive["lock_status"] == "0"
    assert (data["drive_letter"], data["encryption_method"], data["protection_status"]) == (
        "E:",
        "None",
        "0",
    )


def test_bitlocker_protectors_and_failed_methods() -> None:
    record = {
        "volume": {"DriveLetter": "C:", "EncryptionMethod": 7},
        "keyProtectorTypes": [1, 3],
        "version": None,
    }
    row = bitlocker.bitlocker_rows([record])[0]
    assert row["encryption_method"] == "XTS_AES_256"
    assert row["protector_types"] == "Tpm,RecoveryPassword"
    assert row["version"] == "-1" and row["lock_status"] == "-1"
    assert bitlocker.encryption_method(42) == "UNKNOWN"


def test_security_center_antivirus_product_state() -> None:
    wrapper = json_records(recording("securitycenter2-antivirusproduct.json"), "t")[0]
    (row,) = security_center.product_rows(wrapper)
    assert row == {
        "type": "Antivirus",
        "name": "Windows Defender",
        "state": "On",
        "state_timestamp": "Mon, 18 Apr 2022 08:05:47 GMT",
        "remediation_path": "windowsdefender://",
        "signatures_up_to_date": "1",
    }


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (397568, ("On", "1")),  # 0x61100: Defender on, up to date
        (393472, ("Off", "1")),  # 0x60100
        (397584, ("On", "0")),  # 0x61110: signatures out of date
        (401664, ("Snoozed", "1")),  # 0x62100
        (405760, ("Expired", "1")),  # 0x63100
        (None, ("", "")),
    ],
)
def test_product_state_bits(state: int | None, expected: tuple[str, str]) -> None:
    assert security_center.product_state(state) == expected


def test_security_center_health_values() -> None:
    record = {
        "firewall": 0,
        "autoupdate": 1,
        "antivirus": 2,
        "internet_settings": 3,
        "user_account_control": -1,
    }
    (row,) = security_center.security_center_rows(record)
    assert row["firewall"] == "Good" and row["autoupdate"] == "Not Monitored"
    assert row["antivirus"] == "Poor" and row["internet_settings"] == "Snoozed"
    assert row["user_account_control"] == "Error"
    assert row["windows_security_center_service"] == "Error"  # missing


@pytest.mark.parametrize("name", ["get-mpcomputerstatus.txt", "get-mpcomputerstatus-legacy.txt"])
def test_defender_status_from_recorded_values(name: str) -> None:
    records = json_records(format_list_as_json(recording(name)), "t")
    (row,) = defender.defender_rows(records)
    assert row["antivirus_enabled"] == "1" and row["real_time_protection_enabled"] == "1"
    assert row["am_service_enabled"] == "1"
    assert row["full_scan_age_days"] == ""  # 4294967295: never scanned
    if name == "get-mpcomputerstatus.txt":
        assert row["signature_age_days"] == "1"
        assert row["signature_version"] == "1.413.102.0"
        assert row["signature_last_updated"] == str(
            int(datetime(2024, 6, 4, 8, 6, 27, tzinfo=UTC).timestamp())
        )
        assert (row["tamper_protected"], row["signatures_out_of_date"]) == ("0", "0")
        assert row["am_running_mode"] == "Normal"
    else:
        assert row["signature_age_days"] == "0" and row["quick_scan_age_days"] == "0"
        assert row["tamper_protected"] == "" and row["am_running_mode"] == ""


def test_defender_needs_exactly_one_status() -> None:
    with pytest.raises(ProbeError, match="got 0"):
        defender.defender_rows([])


def test_tpm_from_recorded_values() -> None:
    (row,) = firmware.tpm_rows(json_records(format_list_as_json(recording("get-tpm.txt")), "t"))
    assert (row["activated"], row["enabled"], row["owned"]) == ("1", "1", "1")
    assert row["manufacturer_id"] == "1229870147" and row["manufacturer_name"] == "INTC"
    assert row["manufacturer_version"] == "402.1.0.0"
    assert row["spec_version"] == ""  # Get-Tpm lacks it; the probe adds Win32_Tpm's


def test_no_tpm_is_no_row() -> None:
    assert firmware.tpm_rows([{"TpmPresent": False}]) == []


def test_secure_boot() -> None:
    assert (
        firmware.secureboot_rows(recording("confirm-securebootuefi.txt"))[0]["secure_boot"] == "1"
    )
    assert firmware.secureboot_rows("False\r\n")[0]["secure_boot"] == "0"
    assert firmware.secureboot_rows("Unsupported\n")[0]["secure_boot"] == "0"
    with pytest.raises(ProbeError):
        firmware.secureboot_rows("Wahr\n")


def test_local_users() -> None:
    rows = accounts.user_rows(json_records(recording("get-localuser.json"), "t"))
    by_name = {row["username"]: row for row in rows}
    assert set(by_name) == {"chris", "DefaultAccount", "Guest", "sshd", "WDAGUtilityAccount"}
    chris = by_name["chris"]
    assert (chris["uid"], chris["uid_signed"], chris["type"]) == ("500", "500", "local")
    assert chris["uuid"] == "S-1-5-21-2356735557-1575748656-448136971-500"
    assert by_name["Guest"]["uid"] == "501" and by_name["sshd"]["uid"] == "1000"
    assert all(tuple(row) == columns_for("users", "windows") for row in rows)


def test_secedit_export_as_security_profile_info() -> None:
    (row,) = secpol.security_profile_rows(recording("secedit-export-cfg.txt"))
    assert row["maximum_password_age"] == "42" and row["minimum_password_length"] == "0"
    assert row["password_complexity"] == "1" and row["lockout_bad_count"] == "0"
    assert row["new_administrator_name"] == "chris" and row["new_guest_name"] == "Guest"
    assert (row["enable_admin_account"], row["enable_guest_account"]) == ("1", "0")
    assert row["logon_to_change_password"] == "0" and row["audit_account_logon"] == "0"
    assert all(value != "" for value in row.values())


def test_secedit_registry_values_parse_but_are_not_columns() -> None:
    sections = secpol.parse_secedit(recording("secedit-export-cfg.txt"))
    values = sections["Registry Values"]
    assert (
        values["MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion\\Policies\\System\\EnableLUA"]
        == "4,1"
    )


def test_secedit_export_without_policy_is_an_error() -> None:
    with pytest.raises(ProbeError, match="System Access"):
        secpol.security_profile_rows("[Unicode]\nUnicode=yes\n")


def test_computer_info_as_os_version() -> None:
    (row,) = system.os_version_rows(json_records(recording("get-computerinfo.json"), "t"))
    assert row["name"] == "Microsoft Windows Server Datacenter"
    assert (row["version"], row["major"], row["minor"], row["build"]) == (
        "10.0.18363",
        "10",
        "0",
        "18363",
    )
    assert (row["codename"], row["arch"], row["platform"]) == ("1909", "64-bit", "windows")
    assert row["install_date"] == "1599768223"


def test_computer_info_hotfixes_as_patches() -> None:
    info = json_records(recording("get-computerinfo.json"), "t")[0]
    rows = updates.patch_rows(info["OsHotFixes"])
    assert len(rows) == len(info["OsHotFixes"]) >= 10
    assert rows[0]["hotfix_id"] == "KB4569751" and rows[0]["installed_on"] == "8/12/2020"
    assert {row["description"] for row in rows} == {"Update", "Security Update"}


def test_update_history_decodes_enums_and_dates() -> None:
    record = {
        "Date": "/Date(1717488387000)/",
        "Operation": 1,
        "ResultCode": 2,
        "ServerSelection": 2,
        "Title": "2024-06 Cumulative Update for Windows 11 Version 23H2 (KB5037853)",
        "UpdateID": "a1b2",
        "RevisionNumber": 1,
        "HResult": 0,
    }
    (row,) = updates.update_history_rows([record])
    assert (row["operation"], row["result_code"], row["server_selection"]) == (
        "Installation",
        "Succeeded",
        "WindowsUpdate",
    )
    assert row["date"] == "1717488387" and row["update_revision"] == "1"
    later = updates.update_history_rows([record | {"ResultCode": 9, "Date": None}])[0]
    assert (later["result_code"], later["date"]) == ("9", "")


def test_dsregcmd_join_state() -> None:
    (row,) = system.device_join_rows(recording("dsregcmd-status-not-joined.txt"))
    assert (row["azure_ad_joined"], row["domain_joined"], row["enterprise_joined"]) == ("0",) * 3
    assert row["workplace_joined"] == "0" and row["device_name"] == "lenovo-thinkpad"
    with pytest.raises(ProbeError):
        system.device_join_rows("Der Befehl wurde nicht gefunden.")
