"""sudoers (with includes) and authorized_keys (with options), on files written here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.sources.base import ProbeError
from agent.sources.linux import ssh, sudoers
from agent.sources.linux.accounts import PasswdEntry
from protos.posture.v1.tables import columns_for

MAIN_SUDOERS = """\
#
# This file MUST be edited with the 'visudo' command as root.
#
Defaults\tenv_reset
Defaults    secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"

Cmnd_Alias  SHUTDOWN = /sbin/shutdown, \\
                       /sbin/reboot

# User privilege specification
root\tALL=(ALL:ALL) ALL
%sudo   ALL=(ALL:ALL) ALL

@includedir {dropins}
#include extra
#includedir
"""


@pytest.fixture
def sudoers_tree(tmp_path: Path) -> Path:
    dropins = tmp_path / "sudoers.d"
    dropins.mkdir()
    (dropins / "10-ops").write_text("%ops ALL=(root) NOPASSWD: /usr/bin/systemctl\n")
    (dropins / "README").write_text("# only comments here\n")
    (dropins / "old.bak").write_text("mallory ALL=(ALL) NOPASSWD: ALL\n")
    (dropins / "20-backup~").write_text("eve ALL=(ALL) NOPASSWD: ALL\n")
    (tmp_path / "extra").write_text("alice ALL=(ALL) /usr/bin/apt\n")
    main = tmp_path / "sudoers"
    main.write_text(MAIN_SUDOERS.format(dropins=dropins))
    return main


def test_sudoers_rows_follow_includes_in_order(sudoers_tree: Path) -> None:
    rows = sudoers.sudoers_rows(sudoers_tree)
    assert all(tuple(row) == columns_for("sudoers", "linux") for row in rows)
    main, dropins = str(sudoers_tree), sudoers_tree.parent / "sudoers.d"
    assert [(row["source"], row["header"], row["rule_details"]) for row in rows] == [
        (main, "Defaults", "env_reset"),
        (main, "Defaults", 'secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"'),
        (main, "Cmnd_Alias", "SHUTDOWN = /sbin/shutdown, /sbin/reboot"),
        (main, "root", "ALL=(ALL:ALL) ALL"),
        (main, "%sudo", "ALL=(ALL:ALL) ALL"),
        (main, "includedir", str(dropins)),
        (str(dropins / "10-ops"), "%ops", "ALL=(root) NOPASSWD: /usr/bin/systemctl"),
        (main, "include", str(sudoers_tree.parent / "extra")),
        (str(sudoers_tree.parent / "extra"), "alice", "ALL=(ALL) /usr/bin/apt"),
    ]


def test_sudoers_skips_files_sudo_ignores(sudoers_tree: Path) -> None:
    headers = {row["header"] for row in sudoers.sudoers_rows(sudoers_tree)}
    assert not headers & {"mallory", "eve"}


def test_sudoers_include_loops_stop(tmp_path: Path) -> None:
    looping = tmp_path / "sudoers"
    looping.write_text(f"root ALL=(ALL) ALL\n#include {looping}\n")
    rows = sudoers.sudoers_rows(looping)
    assert len([row for row in rows if row["header"] == "root"]) == 128


def test_missing_sudoers_means_no_rules(tmp_path: Path) -> None:
    assert sudoers.sudoers_rows(tmp_path / "sudoers") == []


def test_unreadable_sudoers_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "sudoers"
    target.mkdir()  # a directory cannot be read as a file, even by root
    with pytest.raises(ProbeError, match="sudoers"):
        sudoers.sudoers_rows(target)


ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQDd"
AUTHORIZED_KEYS = f"""\
# keys for alice
ssh-ed25519 {ED25519} alice@laptop
ssh-rsa {RSA}

from="10.0.0.0/8",no-pty,command="/usr/bin/backup --verbose" ssh-ed25519 {ED25519} backup key 2024
restrict,port-forwarding sk-ssh-ed25519@openssh.com {ED25519} yubikey
ssh-ed25519-cert-v01@openssh.com {ED25519}
1024 35 1234567 protocol-one-key
"""


def test_authorized_keys_split_options_algorithm_key_and_comment() -> None:
    rows = ssh.parse_authorized_keys(AUTHORIZED_KEYS, "1000", "/home/alice/.ssh/authorized_keys")
    assert all(tuple(row) == columns_for("authorized_keys", "linux") for row in rows)
    parsed = [(row["options"], row["algorithm"], row["key"], row["comment"]) for row in rows]
    assert parsed == [
        ("", "ssh-ed25519", ED25519, "alice@laptop"),
        ("", "ssh-rsa", RSA, ""),
        (
            'from="10.0.0.0/8",no-pty,command="/usr/bin/backup --verbose"',
            "ssh-ed25519",
            ED25519,
            "backup key 2024",
        ),
        ("restrict,port-forwarding", "sk-ssh-ed25519@openssh.com", ED25519, "yubikey"),
        ("", "ssh-ed25519-cert-v01@openssh.com", ED25519, ""),
    ]
    assert {row["uid"] for row in rows} == {"1000"}
    assert {row["key_file"] for row in rows} == {"/home/alice/.ssh/authorized_keys"}


def test_authorized_keys_of_each_user_home(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    (alice / ".ssh").mkdir(parents=True)
    (alice / ".ssh" / "authorized_keys").write_text(f"ssh-ed25519 {ED25519} a\n")
    (alice / ".ssh" / "authorized_keys2").write_text(f"ssh-rsa {RSA} b\n")
    users = [
        PasswdEntry("alice", 1000, 1000, "", str(alice), "/bin/bash"),
        PasswdEntry("nobody", 65534, 65534, "", str(tmp_path / "nonexistent"), "/bin/false"),
        PasswdEntry("weird", 5, 5, "", "relative/home", "/bin/false"),
    ]
    rows = ssh.authorized_keys_rows(users)
    assert [(row["uid"], row["comment"], row["key_file"]) for row in rows] == [
        ("1000", "a", str(alice / ".ssh" / "authorized_keys")),
        ("1000", "b", str(alice / ".ssh" / "authorized_keys2")),
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux host")
def test_this_hosts_authorized_keys_and_sudoers_shape() -> None:
    for row in ssh.collect_authorized_keys():
        assert tuple(row) == columns_for("authorized_keys", "linux")
        assert row["algorithm"] and row["key"]
    rows = sudoers.collect_sudoers()
    if not sudoers.SUDOERS_PATH.exists():
        assert rows == []
    for row in rows:
        assert tuple(row) == columns_for("sudoers", "linux")
        assert row["header"] and not row["header"].startswith("#")
