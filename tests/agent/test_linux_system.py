"""os_version, system_info, kernel_info and uptime: parsers on recorded text, then this host."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from agent.sources.linux import system
from protos.posture.v1.tables import columns_for

UBUNTU_OS_RELEASE = """\
PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=jammy
"""

ROCKY_OS_RELEASE = """\
NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
# a comment
PRETTY_NAME='Rocky Linux 9.3 (Blue Onyx)'
"""

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 140
model name\t: 11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz
microcode\t: 0xb4
physical id\t: 0
core id\t\t: 0

processor\t: 1
model\t\t: 140
physical id\t: 0
core id\t\t: 1

processor\t: 2
model\t\t: 140
physical id\t: 0
core id\t\t: 0

processor\t: 3
model\t\t: 140
physical id\t: 0
core id\t\t: 1
"""


def test_os_version_from_ubuntu_os_release() -> None:
    row = system.os_version_row(system.parse_os_release(UBUNTU_OS_RELEASE), "x86_64")
    assert row == {
        "name": "Ubuntu",
        "version": "22.04.4 LTS (Jammy Jellyfish)",
        "major": "22",
        "minor": "04",
        "patch": "0",
        "build": "",
        "platform": "ubuntu",
        "platform_like": "debian",
        "codename": "jammy",
        "arch": "x86_64",
    }


def test_os_version_unquotes_lists_and_skips_comments() -> None:
    fields = system.parse_os_release(ROCKY_OS_RELEASE)
    row = system.os_version_row(fields, "aarch64")
    assert row["platform"] == "rocky"
    assert row["platform_like"] == "rhel centos fedora"
    assert (row["major"], row["minor"], row["patch"]) == ("9", "3", "0")
    assert fields["PRETTY_NAME"] == "Rocky Linux 9.3 (Blue Onyx)"
    assert "# a comment" not in fields


def test_os_version_without_os_release_has_osquery_defaults() -> None:
    row = system.os_version_row({}, "x86_64")
    assert (row["name"], row["major"], row["minor"], row["patch"]) == ("Unknown", "0", "0", "0")


def test_cpuinfo_counts_cores_and_sockets() -> None:
    assert system.parse_cpuinfo(CPUINFO) == {
        "cpu_brand": "11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz",
        "cpu_subtype": "140",
        "cpu_microcode": "0xb4",
        "cpu_logical_cores": "4",
        "cpu_physical_cores": "2",
        "cpu_sockets": "1",
    }


def test_kernel_info_takes_boot_image_and_root_from_the_command_line() -> None:
    cmdline = "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=UUID=0b7e-11 ro quiet splash\n"
    row = system.kernel_info_row("6.1.0-18-amd64", cmdline)
    assert row == {
        "version": "6.1.0-18-amd64",
        "arguments": "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=UUID=0b7e-11 ro quiet splash",
        "path": "/vmlinuz-6.1.0-18-amd64",
        "device": "UUID=0b7e-11",
    }


def test_uptime_splits_seconds() -> None:
    row = system.uptime_row(2 * 86400 + 3 * 3600 + 4 * 60 + 5)
    assert row == {
        "days": "2",
        "hours": "3",
        "minutes": "4",
        "seconds": "5",
        "total_seconds": "183845",
    }


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads this Linux host"
)


@linux_only
def test_this_hosts_os_version() -> None:
    (row,) = system.collect_os_version()
    assert tuple(row) == columns_for("os_version", "linux")
    assert row["arch"] == os.uname().machine
    assert row["major"].isdigit()
    assert row["platform"]


@linux_only
def test_this_hosts_system_info() -> None:
    (row,) = system.collect_system_info()
    assert tuple(row) == columns_for("system_info", "linux")
    assert all(isinstance(value, str) for value in row.values())
    assert row["hostname"] == socket.gethostname()
    assert len(row["uuid"]) == 36 and row["uuid"] == row["uuid"].upper()
    assert int(row["cpu_logical_cores"]) >= 1
    assert int(row["physical_memory"]) > 64 * 1024 * 1024


@linux_only
def test_this_hosts_kernel_and_uptime() -> None:
    (kernel,) = system.collect_kernel_info()
    assert kernel["version"] == os.uname().release
    (uptime,) = system.collect_uptime()
    assert tuple(uptime) == columns_for("uptime", "linux")
    total = int(uptime["total_seconds"])
    parts = (int(uptime[column]) for column in ("days", "hours", "minutes", "seconds"))
    assert total > 0
    assert (
        sum(value * unit for value, unit in zip(parts, (86400, 3600, 60, 1), strict=True)) == total
    )
