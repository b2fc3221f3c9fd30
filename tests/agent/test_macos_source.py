"""The whole macOS source: recorded tool output and plist files in, rows or errors out.

Commands replay recordings from ../shared/fixtures/macos; preference files are real plist
files (binary and XML, as macOS writes them) under a temporary root. Accounts come from
this machine's own C library, through the same calls macOS answers from Open Directory.
"""

from __future__ import annotations

import grp
import os
import plistlib
import pwd
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.collect import collect
from agent.plan import CollectionPlan
from agent.runner import CommandRunner, RecordedRunner
from agent.sources import NATIVE_FIRST, default_sources
from agent.sources.base import ProbeError, TableRequest
from agent.sources.macos import (
    MacosNativeSource,
    accounts,
    encryption,
    management,
    passwords,
    security,
    system,
    updates,
)
from protos.posture.v1.tables import columns_for, platform_tables

FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "macos"
SW_VERS = "ProductName:\t\tmacOS\nProductVersion:\t\t15.1\nBuildVersion:\t\t24B83\n"
LAST_CHECK = datetime(2024, 11, 20, 9, 30, tzinfo=UTC)
ALF = security.ALF_COMMANDS


def recording(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8").partition("\n")[2]


def recordings() -> dict[tuple[str, ...], str | ProbeError]:
    local_updates = {
        "AutomaticCheckEnabled": True,
        "AutomaticDownload": False,
        "LastSuccessfulDate": LAST_CHECK.replace(tzinfo=None),
    }
    return {
        system.SW_VERS_COMMAND: SW_VERS,
        encryption.STATUS_COMMAND: recording("fdesetup-status-on-master-keychain.txt"),
        encryption.LIST_COMMAND: "alice,1E2D3C4B-5A69-4788-9A0B-1C2D3E4F5A6B\n",
        security.CSRUTIL_COMMAND: recording("csrutil-status-enabled.txt"),
        security.SPCTL_COMMAND: recording("spctl-status-disabled.txt"),
        security.ALF_COMMANDS["--getglobalstate"]: recording(
            "socketfilterfw-getglobalstate-on.txt"
        ),
        security.ALF_COMMANDS["--getstealthmode"]: "Firewall stealth mode is on\n",
        security.ALF_COMMANDS["--getloggingmode"]: "Log mode is on\n",
        security.ALF_COMMANDS[
            "--getallowsigned"
        ]: "Automatically allow built-in signed software ENABLED.\n",
        management.PROFILES_COMMAND: recording("profiles-status-enrollment.txt"),
        management.FIRMWAREPASSWD_COMMAND: recording("firmwarepasswd-check-yes.txt"),
        passwords.COMMAND: recording("pwpolicy-getaccountpolicies.txt"),
        updates.DEFAULTS_COMMAND: plistlib.dumps(local_updates).decode(),
        updates.LIST_COMMAND: recording("softwareupdate-list-update-available.txt"),
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A filesystem root with a device profile, a user profile and a user's own setting."""
    managed = tmp_path / "Library/Managed Preferences"
    (managed / "alice").mkdir(parents=True)
    screensaver = {"idleTime": 600, "askForPassword": True, "askForPasswordDelay": 5}
    (managed / "com.apple.screensaver.plist").write_bytes(
        plistlib.dumps(screensaver, fmt=plistlib.FMT_BINARY)
    )
    (managed / "com.apple.SoftwareUpdate.plist").write_bytes(
        plistlib.dumps({"AutomaticallyInstallMacOSUpdates": True, "AutomaticDownload": True})
    )
    (managed / "alice/com.apple.screensaver.plist").write_bytes(
        plistlib.dumps({"idleTime": 1200.0})
    )
    (managed / "alice/com.apple.dock.plist").write_bytes(plistlib.dumps({"autohide": False}))
    byhost = tmp_path / "Users/bob/Library/Preferences/ByHost"
    byhost.mkdir(parents=True)
    (byhost / "com.apple.screensaver.8F2A1C3E-0000-4000-8000-00000000AB12.plist").write_bytes(
        plistlib.dumps({"idleTime": 0, "moduleDict": {"moduleName": "Flurry"}})
    )
    (byhost / "com.apple.screensaver.other.plist").write_bytes(plistlib.dumps({"showClock": 1}))
    return tmp_path


@pytest.fixture
def source(root: Path) -> MacosNativeSource:
    return MacosNativeSource(
        RecordedRunner(recordings()), platform="darwin", root=root, machine="x86_64"
    )


def test_not_available_elsewhere() -> None:
    native = MacosNativeSource(RecordedRunner({}), platform="linux")
    assert not native.available() and native.tables() == frozenset()


def test_every_table_has_the_catalogue_columns(source: MacosNativeSource) -> None:
    for table in sorted(source.tables()):
        rows = source.collect(TableRequest(table))
        assert rows, table
        for row in rows:
            assert tuple(row) == columns_for(table, "darwin"), table
            assert all(isinstance(value, str) for value in row.values()), table


def test_source_covers_the_issue_tables_and_every_macos_extension(
    source: MacosNativeSource,
) -> None:
    wanted = {
        "disk_encryption", "sip_config", "gatekeeper", "alf", "os_version", "password_policy",
        "managed_policies", "macos_screenlock_policy", "software_update", "mdm",
    }  # fmt: skip
    extensions = {
        table.name
        for table in platform_tables("darwin")
        if table.posture_extension and table.name != "file_lines"
    }
    assert wanted | extensions <= source.tables()


def test_screenlock_from_profiles_and_user_settings(source: MacosNativeSource, root: Path) -> None:
    rows = source.collect(TableRequest("macos_screenlock_policy"))
    assert [(r["scope"], r["username"], r["idle_time"], r["ask_for_password"]) for r in rows] == [
        ("user", "alice", "1200", ""),
        ("computer", "", "600", "1"),
        ("user_setting", "bob", "0", ""),
    ]
    assert rows[1]["ask_for_password_delay"] == "5"
    assert rows[1]["source_path"] == str(
        root / "Library/Managed Preferences/com.apple.screensaver.plist"
    )


def test_managed_policies_list_every_profile_key(source: MacosNativeSource) -> None:
    rows = source.collect(TableRequest("managed_policies"))
    found = {(r["domain"], r["name"], r["username"]): r["value"] for r in rows}
    assert found[("com.apple.screensaver", "askForPassword", "")] == "1"
    assert found[("com.apple.screensaver", "idleTime", "alice")] == "1200"
    assert found[("com.apple.dock", "autohide", "alice")] == "0"
    assert found[("com.apple.SoftwareUpdate", "AutomaticDownload", "")] == "1"


def test_software_update_settings_managed_values_win(source: MacosNativeSource) -> None:
    (row,) = source.collect(TableRequest("software_update"))
    assert row["automatic_check_enabled"] == "1"  # local
    assert row["automatic_download"] == "1"  # the profile overrides the local False
    assert row["automatically_install_macos_updates"] == "1" and row["managed"] == "1"
    assert row["critical_update_install"] == ""  # set nowhere: macOS default, unknown here
    assert row["last_successful_check"] == str(int(LAST_CHECK.timestamp()))


def test_software_update_without_a_profile(tmp_path: Path) -> None:
    native = MacosNativeSource(RecordedRunner(recordings()), platform="darwin", root=tmp_path)
    (row,) = native.collect(TableRequest("software_update"))
    assert (row["automatic_download"], row["managed"]) == ("0", "0")


def test_disk_encryption_names_filevault_users(source: MacosNativeSource) -> None:
    (row,) = source.collect(TableRequest("disk_encryption"))
    assert (row["encrypted"], row["filevault_status"]) == ("1", "on")
    assert row["user_uuid"] == "1E2D3C4B-5A69-4788-9A0B-1C2D3E4F5A6B"


def test_filevault_off_asks_for_no_user_list(root: Path) -> None:
    recorded = recordings()
    recorded[encryption.STATUS_COMMAND] = "FileVault is Off.\n"
    runner = RecordedRunner(recorded)
    native = MacosNativeSource(runner, platform="darwin", root=root)
    (row,) = native.collect(TableRequest("disk_encryption"))
    assert (row["encrypted"], row["user_uuid"]) == ("0", "")
    assert encryption.LIST_COMMAND not in runner.calls


def test_gatekeeper_comes_from_spctl(source: MacosNativeSource) -> None:
    assert source.collect(TableRequest("gatekeeper"))[0]["assessments_enabled"] == "0"


def test_apple_silicon_has_no_firmware_password_and_runs_nothing(root: Path) -> None:
    runner = RecordedRunner(recordings())
    native = MacosNativeSource(runner, platform="darwin", root=root, machine="arm64")
    assert native.collect(TableRequest("macos_firmware_password")) == []
    assert runner.calls == []


def test_accounts_match_the_c_library(source: MacosNativeSource) -> None:
    users = {row["username"]: row for row in source.collect(TableRequest("users"))}
    me = pwd.getpwuid(os.getuid())
    assert users[me.pw_name]["uid"] == str(me.pw_uid)
    assert users[me.pw_name]["directory"] == me.pw_dir
    groups = {row["groupname"]: row["gid"] for row in source.collect(TableRequest("groups"))}
    assert groups[grp.getgrgid(me.pw_gid).gr_name] == str(me.pw_gid)
    pairs = {(row["uid"], row["gid"]) for row in source.collect(TableRequest("user_groups"))}
    assert (str(me.pw_uid), str(me.pw_gid)) in pairs


def test_user_groups_include_listed_members() -> None:
    admin = grp.struct_group(("admin", "*", 80, ["alice", "ghost"]))
    alice = pwd.struct_passwd(("alice", "*", 501, 20, "Alice", "/Users/alice", "/bin/zsh"))
    nobody = pwd.struct_passwd(("nobody", "*", 4294967294, 4294967294, "", "/", "/bin/false"))
    pairs = [(r["uid"], r["gid"]) for r in accounts.user_group_rows([alice, nobody], [admin])]
    assert pairs == [("501", "20"), ("501", "80"), ("4294967294", "4294967294")]
    assert accounts.collect_users([nobody])[0]["uid_signed"] == "-2"


def test_failures_become_table_errors(root: Path) -> None:
    recorded = recordings()
    recorded[security.CSRUTIL_COMMAND] = ProbeError("csrutil did not finish within 30 s")
    recorded[updates.LIST_COMMAND] = recording("softwareupdate-list-error.txt")
    del recorded[passwords.COMMAND]
    native = MacosNativeSource(RecordedRunner(recorded), platform="darwin", root=root)
    names = ("sip_config", "software_update_available", "password_policy", "gatekeeper")
    result = collect(CollectionPlan("v1", 300, tuple(TableRequest(n) for n in names)), [native])
    assert result.tables["sip_config"].error == "native: csrutil did not finish within 30 s"
    assert "network connection was lost" in result.tables["software_update_available"].error
    assert "no recording for" in result.tables["password_policy"].error
    assert all(result.tables[name].rows == [] for name in names[:3])
    assert result.tables["gatekeeper"].rows[0]["assessments_enabled"] == "0"


def test_an_unreadable_profile_is_an_error_not_a_missing_setting(root: Path) -> None:
    (root / "Library/Managed Preferences/com.apple.screensaver.plist").write_text("<plist><dict>")
    native = MacosNativeSource(RecordedRunner({}), platform="darwin", root=root)
    with pytest.raises(ProbeError, match="not a property list"):
        native.collect(TableRequest("macos_screenlock_policy"))


@pytest.mark.skipif(sys.platform == "darwin", reason="the tools exist on macOS")
def test_the_real_runner_reports_missing_apple_tools(root: Path) -> None:
    native = MacosNativeSource(CommandRunner(), platform="darwin", root=root)
    with pytest.raises(ProbeError, match="/usr/bin/csrutil is not installed"):
        native.collect(TableRequest("sip_config"))


def test_spctl_exit_status_one_still_answers(tmp_path: Path) -> None:
    # spctl exits 1 when assessments are disabled; the probe accepts that status only.
    tool = tmp_path / "spctl"
    tool.write_text("#!/bin/sh\necho 'assessments disabled'\nexit 1\n")
    tool.chmod(0o755)
    assert CommandRunner().run([str(tool)], ok_statuses=(0, 1)) == "assessments disabled\n"
    with pytest.raises(ProbeError, match="exited with status 1"):
        CommandRunner().run([str(tool)])


def test_runner_can_return_what_a_tool_prints_on_stderr() -> None:
    script = "echo 'Software Update Tool' >&2; echo; echo 'No new software available.' >&2"
    output = CommandRunner().run(["sh", "-c", script], with_stderr=True)
    assert output == "Software Update Tool\n\nNo new software available.\n"
    failing = "echo 'Scan failed: offline'; exit 2"
    with pytest.raises(ProbeError, match="exited with status 2: Scan failed: offline"):
        CommandRunner().run(["sh", "-c", failing], with_stderr=True)


def test_registry_puts_native_first_for_tables_osquery_gets_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    osquery, native = default_sources(str(tmp_path / "no-osqueryd.em"))
    assert native.name == "native" and isinstance(native, MacosNativeSource)
    assert "gatekeeper" in NATIVE_FIRST["darwin"]
    assert "gatekeeper" not in osquery.tables() and not osquery.available()
