"""macOS parsers against the published recordings in ../shared/fixtures/macos.

Every recording is parsed into its table here, except ``mdmclient-querysecurityinfo.txt``
(see its test). Outputs with no published recording (``sw_vers``, ``socketfilterfw``'s
other options, ``fdesetup list``, ``fdesetup status`` while encrypting) are written here
from Apple's documented wording; docs/tables.md lists these gaps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sources.base import ProbeError
from agent.sources.macos import encryption, management, passwords, security, system, updates
from protos.posture.v1.tables import columns_for

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "macos"

NOT_PARSED = {
    "mdmclient-querysecurityinfo.txt": "an undocumented daemon's debug description",
}


def recording(name: str) -> str:
    first, _, rest = (FIXTURES / name).read_text(encoding="utf-8").partition("\n")
    assert first.startswith("# source:"), name
    return rest


def sip(name: str) -> dict[str, str]:
    return {row["config_flag"]: row["enabled"] for row in security.sip_rows(recording(name))}


def test_every_recording_is_parsed_or_refused_for_a_stated_reason() -> None:
    parsed = {
        "csrutil-status-custom-config-elcapitan.txt", "csrutil-status-enabled.txt",
        "csrutil-status-unknown-custom-config.txt", "fdesetup-status-deferred-partial.txt",
        "fdesetup-status-on-master-keychain.txt", "firmwarepasswd-check-no.txt",
        "firmwarepasswd-check-yes.txt", "profiles-status-enrollment-legacy-dep.txt",
        "profiles-status-enrollment-legacy-nodep.txt", "profiles-status-enrollment.txt",
        "pwpolicy-getaccountpolicies.txt", "socketfilterfw-getglobalstate-blockall-legacy.txt",
        "socketfilterfw-getglobalstate-blockall.txt", "socketfilterfw-getglobalstate-off.txt",
        "socketfilterfw-getglobalstate-on.txt", "softwareupdate-list-error.txt",
        "softwareupdate-list-multiple-noscan.txt", "softwareupdate-list-no-updates.txt",
        "softwareupdate-list-update-available.txt", "spctl-status-disabled.txt",
        "spctl-status-enabled.txt",
    }  # fmt: skip
    assert {path.name for path in FIXTURES.iterdir()} == parsed | set(NOT_PARSED)


def test_mdmclient_output_is_not_what_the_mdm_table_parses() -> None:
    # mdmclient prints NeXTSTEP-style debug text from a private daemon; profiles(1) states
    # the same enrollment facts in documented sentences.
    sample = recording("mdmclient-querysecurityinfo.txt")
    assert "EnrolledViaDEP = 1;" in sample
    with pytest.raises(ProbeError, match="unexpected profiles output"):
        management.mdm_rows(sample)


def test_sip_enabled_is_every_protection_on() -> None:
    flags = sip("csrutil-status-enabled.txt")
    assert flags.pop("sip") == "1"
    assert flags and set(flags.values()) == {"0"}
    assert "allow_untrusted_kexts" in flags and "allow_unrestricted_fs" in flags


def test_sip_custom_configuration_with_protections_off() -> None:
    flags = sip("csrutil-status-custom-config-elcapitan.txt")
    assert flags["sip"] == "0"
    assert flags["allow_untrusted_kexts"] == "1" and flags["allow_unrestricted_fs"] == "1"
    assert flags["allow_apple_internal"] == "0"  # "Apple Internal: disabled"


def test_sip_unknown_with_tab_indented_configuration() -> None:
    flags = sip("csrutil-status-unknown-custom-config.txt")
    assert flags["sip"] == "0"
    assert flags["allow_unrestricted_fs"] == "1" and flags["allow_unrestricted_nvram"] == "0"
    assert flags["allow_any_recovery_os"] == "0"  # "BaseSystem Verification: enabled"


def test_sip_rows_have_the_catalogue_columns() -> None:
    rows = security.sip_rows(recording("csrutil-status-enabled.txt"))
    assert all(tuple(row) == columns_for("sip_config", "darwin") for row in rows)
    with pytest.raises(ProbeError):
        security.sip_rows("csrutil: command not found")


@pytest.mark.parametrize(
    ("name", "expected"), [("spctl-status-enabled.txt", "1"), ("spctl-status-disabled.txt", "0")]
)
def test_gatekeeper(name: str, expected: str) -> None:
    (row,) = security.gatekeeper_rows(recording(name))
    assert row["assessments_enabled"] == expected
    assert row["dev_id_enabled"] == ""


def alf_outputs(globalstate: str) -> dict[str, str]:
    return {
        "--getglobalstate": globalstate,
        "--getstealthmode": "Firewall stealth mode is on\n",
        "--getloggingmode": "Log mode is off\n",
        "--getallowsigned": (
            "Automatically allow built-in signed software ENABLED.\n"
            "Automatically allow downloaded signed software DISABLED.\n"
        ),
    }


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("socketfilterfw-getglobalstate-off.txt", "0"),
        ("socketfilterfw-getglobalstate-on.txt", "1"),
        ("socketfilterfw-getglobalstate-blockall.txt", "2"),
        ("socketfilterfw-getglobalstate-blockall-legacy.txt", "2"),
    ],
)
def test_alf_global_state_whatever_the_wording(name: str, state: str) -> None:
    (row,) = security.alf_rows(alf_outputs(recording(name)))
    assert row["global_state"] == state
    assert (row["stealth_enabled"], row["logging_enabled"], row["allow_signed_enabled"]) == (
        "1",
        "0",
        "1",
    )


def test_alf_older_wordings_and_unknown_text() -> None:
    outputs = alf_outputs("Firewall is enabled. (State = 1)\n")
    outputs["--getstealthmode"] = "Stealth mode disabled\n"
    assert security.alf_rows(outputs)[0]["stealth_enabled"] == "0"
    outputs["--getstealthmode"] = "Mode furtif activé\n"
    with pytest.raises(ProbeError, match="--getstealthmode"):
        security.alf_rows(outputs)


def test_filevault_on() -> None:
    status = recording("fdesetup-status-on-master-keychain.txt")
    assert encryption.filevault_state(status) == ("1", "on", "encrypted")
    users = encryption.parse_fdesetup_list("alice,1E2D3C4B-5A69-4788-9A0B-1C2D3E4F5A6B\n")
    rows = encryption.disk_encryption_rows(status, users, "/dev/disk3s5", lambda _: "501")
    assert rows == [
        {
            "name": "/dev/disk3s5",
            "uuid": "",
            "encrypted": "1",
            "type": "APFS",
            "encryption_status": "encrypted",
            "uid": "501",
            "user_uuid": "1E2D3C4B-5A69-4788-9A0B-1C2D3E4F5A6B",
            "filevault_status": "on",
        }
    ]


def test_filevault_deferred_recording_is_partial() -> None:
    partial = recording("fdesetup-status-deferred-partial.txt")
    with pytest.raises(ProbeError, match="unexpected fdesetup status output"):
        encryption.filevault_state(partial)
    # The issue it comes from leaves out the "FileVault is Off." line before it.
    assert encryption.filevault_state("FileVault is Off.\n" + partial) == ("0", "off", "deferred")


def test_filevault_while_converting_is_not_yet_encrypted() -> None:
    encrypting = "FileVault is On.\nEncryption in progress: Percent completed = 42.0\n"
    assert encryption.filevault_state(encrypting) == ("0", "on", "encrypting")
    decrypting = "FileVault is Off.\nDecryption in progress: Percent completed = 3.0\n"
    assert encryption.filevault_state(decrypting) == ("0", "off", "decrypting")
    assert encryption.filevault_state("FileVault is Off.\n") == ("0", "off", "undefined")


def test_mdm_enrollment_current_format() -> None:
    (row,) = management.mdm_rows(recording("profiles-status-enrollment.txt"))
    assert row == {
        "enrolled": "1",
        "server_url": "https://MDMSERVER:8443/mdm/ServerURL",
        "installed_from_dep": "1",
        "user_approved": "1",
    }
    (unenrolled,) = management.mdm_rows("Enrolled via DEP: No\nMDM enrollment: No\n")
    assert (unenrolled["enrolled"], unenrolled["user_approved"]) == ("0", "0")


@pytest.mark.parametrize(
    ("name", "enrolled"),
    [
        ("profiles-status-enrollment-legacy-dep.txt", "1"),
        ("profiles-status-enrollment-legacy-nodep.txt", "0"),
    ],
)
def test_mdm_enrollment_legacy_sentences(name: str, enrolled: str) -> None:
    (row,) = management.mdm_rows(recording(name))
    assert row["enrolled"] == enrolled
    assert row["installed_from_dep"] == "" and row["user_approved"] == ""


@pytest.mark.parametrize(
    ("name", "enabled"),
    [("firmwarepasswd-check-yes.txt", "1"), ("firmwarepasswd-check-no.txt", "0")],
)
def test_firmware_password(name: str, enabled: str) -> None:
    assert management.firmware_password_rows(recording(name)) == [{"password_enabled": enabled}]


def test_password_policy_from_pwpolicy() -> None:
    rows = passwords.password_policy_rows(recording("pwpolicy-getaccountpolicies.txt"))
    assert all(tuple(row) == columns_for("password_policy", "darwin") for row in rows)
    by_id = {row["policy_identifier"]: row for row in rows}
    min_length = by_id["ProfilePayload:AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA:minLength"]
    assert min_length["policy_category"] == "policyCategoryPasswordContent"
    assert min_length["policy_description"] == "Contain at least 8 characters."
    assert min_length["policy_content"] == "policyAttributePassword matches '.{8,}'"
    lockout = by_id["Authentication Lockout"]
    assert lockout["policy_category"] == "policyCategoryAuthentication"
    assert json.loads(lockout["policy_parameters"]) == {
        "autoEnableInSeconds": 60,
        "policyAttributeMaximumFailedAuthentications": 5,
    }
    assert by_id["Has at least 8 characters"]["policy_description"] == ""
    assert lockout["uid"] == ""


def test_password_policy_needs_the_property_list() -> None:
    with pytest.raises(ProbeError, match="no property list"):
        passwords.password_policy_rows("Getting global account policies\n")


def test_available_updates_without_scan() -> None:
    rows = updates.available_update_rows(recording("softwareupdate-list-multiple-noscan.txt"))
    assert [row["label"] for row in rows] == [
        "Command Line Tools for Xcode-14.3",
        "macOS Ventura 13.4 Beta-22F5027f",
    ]
    tools, macos = rows
    assert (tools["title"], tools["version"], tools["size"]) == (
        "Command Line Tools for Xcode",
        "14.3",
        "711888KiB",
    )
    assert (tools["recommended"], tools["action"], tools["restart_required"]) == ("1", "", "0")
    assert (macos["action"], macos["restart_required"]) == ("restart", "1")


def test_available_update_after_scan() -> None:
    (row,) = updates.available_update_rows(recording("softwareupdate-list-update-available.txt"))
    assert row["label"] == "macOS Ventura 13.3.1-22E261" and row["restart_required"] == "1"


def test_no_updates_is_no_rows_and_a_failed_scan_is_an_error() -> None:
    assert updates.available_update_rows(recording("softwareupdate-list-no-updates.txt")) == []
    with pytest.raises(ProbeError, match="The network connection was lost"):
        updates.available_update_rows(recording("softwareupdate-list-error.txt"))
    with pytest.raises(ProbeError, match="unexpected softwareupdate output"):
        updates.available_update_rows("")


def test_sw_vers() -> None:
    output = "ProductName:\t\tmacOS\nProductVersion:\t\t14.5\nBuildVersion:\t\t23F79\n"
    (row,) = system.os_version_rows(output, "arm64")
    assert (row["name"], row["version"], row["major"], row["minor"], row["patch"]) == (
        "macOS",
        "14.5",
        "14",
        "5",
        "0",
    )
    assert (row["build"], row["codename"], row["arch"], row["platform"]) == (
        "23F79",
        "Sonoma",
        "arm64",
        "darwin",
    )
    rsr = output.replace("14.5", "13.4.1") + "ProductVersionExtra:\t(a)\n"
    assert system.os_version_rows(rsr, "x86_64")[0]["extra"] == "(a)"
    with pytest.raises(ProbeError):
        system.os_version_rows("sw_vers: not found", "arm64")
