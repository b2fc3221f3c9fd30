"""deb_packages and rpm_packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runner import RecordedRunner
from agent.sources.base import ProbeError
from agent.sources.linux import packages
from protos.posture.v1.tables import columns_for

DPKG_STATUS = """\
Package: openssl
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 2303
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Version: 3.0.15-1~deb12u1
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.9)
Conffiles:
 /etc/ssl/openssl.cnf 6b4a72a4ce84bab35d884e536295e14f
Description: Secure Sockets Layer toolkit - cryptographic utility
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols for secure communication over the
 Internet.

Package: libpam-modules
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 1031
Maintainer: Steve Langasek <vorlon@debian.org>
Architecture: amd64
Multi-Arch: same
Source: pam (1.5.2-6+deb12u1)
Version: 1.5.2-6+deb12u1
Description: Pluggable Authentication Modules for PAM

Package: telnetd
Status: deinstall ok config-files
Priority: optional
Section: net
Installed-Size: 112
Architecture: amd64
Version: 0.17+2.4-2
Description: telnet server (removed, configuration kept)

Package: nano
Status: hold ok installed
Priority: important
Section: editors
Installed-Size: 2818
Architecture: amd64
Version: 7.2-1+deb12u1
Description: small, friendly text editor

Package: half
Status: install reinstreq half-configured
Architecture: all
Version: 1:2.0
Description: an interrupted upgrade

Package: gone
Status: purge ok not-installed
Architecture: amd64
"""


def test_dpkg_status_lists_present_packages_only() -> None:
    rows = packages.parse_dpkg_status(DPKG_STATUS, "/var/lib/dpkg")
    assert [row["name"] for row in rows] == ["openssl", "libpam-modules", "nano", "half"]
    assert all(tuple(row) == columns_for("deb_packages", "linux") for row in rows)


def test_dpkg_status_fields_map_to_osquery_columns() -> None:
    rows = {row["name"]: row for row in packages.parse_dpkg_status(DPKG_STATUS, "/var/lib/dpkg")}
    assert rows["openssl"] == {
        "name": "openssl",
        "version": "3.0.15-1~deb12u1",
        "source": "",
        "size": "2303",
        "arch": "amd64",
        "revision": "1~deb12u1",
        "status": "install ok installed",
        "maintainer": "Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>",
        "section": "utils",
        "priority": "optional",
        "admindir": "/var/lib/dpkg",
    }
    assert rows["libpam-modules"]["source"] == "pam (1.5.2-6+deb12u1)"
    assert rows["nano"]["status"] == "hold ok installed"
    assert (rows["half"]["version"], rows["half"]["revision"]) == ("1:2.0", "")


def test_dpkg_status_reads_only_the_planned_fields() -> None:
    every = packages.parse_dpkg_status(DPKG_STATUS, "/var/lib/dpkg")
    planned = packages.parse_dpkg_status(DPKG_STATUS, "/var/lib/dpkg", ("name", "revision"))
    assert [row["name"] for row in planned] == [row["name"] for row in every]
    openssl = planned[0]
    assert tuple(openssl) == columns_for("deb_packages", "linux")
    assert (openssl["revision"], openssl["maintainer"], openssl["status"]) == ("1~deb12u1", "", "")
    for row, full in zip(planned, every, strict=True):
        assert {k: v for k, v in row.items() if v} == {
            k: full[k] for k in ("name", "version", "revision", "admindir") if full[k]
        }


def test_dpkg_stanzas_split_on_blank_lines_holding_spaces() -> None:
    text = "Package: a\nStatus: install ok installed\n \nPackage: b\nStatus: install ok installed"
    assert [row["name"] for row in packages.parse_dpkg_status(text)] == ["a", "b"]


RPM_OUTPUT = (
    "bash\x1f5.1.8\x1f9.el9\x1fbash-5.1.8-9.el9.src.rpm\x1f7738634\x1f"
    "a5f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3\x1fx86_64\x1f(none)\x1f1700000000\x1f"
    "Rocky Enterprise Software Foundation\x1fUnspecified\x1e"
    "openssl\x1f3.0.7\x1f25.el9_3\x1fopenssl-3.0.7-25.el9_3.src.rpm\x1f1919231\x1f"
    "0123456789abcdef0123456789abcdef01234567\x1fx86_64\x1f1\x1f1700000100\x1f"
    "Rocky Enterprise Software Foundation\x1fUnspecified\x1e"
    "gpg-pubkey\x1f350d275d\x1f6279464b\x1f(none)\x1f0\x1f(none)\x1f(none)\x1f(none)\x1f"
    "1700000200\x1f(none)\x1fPublic Keys\x1e"
)


def test_rpm_query_output_parses_and_blanks_none() -> None:
    rows = packages.parse_rpm_query(RPM_OUTPUT)
    assert all(tuple(row) == columns_for("rpm_packages", "linux") for row in rows)
    assert [row["name"] for row in rows] == ["bash", "openssl", "gpg-pubkey"]
    assert rows[1] == {
        "name": "openssl",
        "version": "3.0.7",
        "release": "25.el9_3",
        "source": "openssl-3.0.7-25.el9_3.src.rpm",
        "size": "1919231",
        "sha1": "0123456789abcdef0123456789abcdef01234567",
        "arch": "x86_64",
        "epoch": "1",
        "install_time": "1700000100",
        "vendor": "Rocky Enterprise Software Foundation",
        "package_group": "Unspecified",
    }
    assert rows[0]["epoch"] == ""
    assert (rows[2]["arch"], rows[2]["source"], rows[2]["vendor"]) == ("", "", "")


def test_rpm_packages_run_rpm_through_the_runner(tmp_path: Path) -> None:
    command = ("rpm", "-qa", "--queryformat", packages.RPM_QUERY)
    replay = RecordedRunner({command: RPM_OUTPUT})
    (tmp_path / "rpmdb.sqlite").write_bytes(b"")
    assert len(packages.collect_rpm_packages(replay, (tmp_path,))) == 3
    assert replay.calls == [command]


def test_no_package_database_is_an_empty_table_not_an_error(tmp_path: Path) -> None:
    replay = RecordedRunner({})
    assert packages.collect_rpm_packages(replay, (tmp_path / "absent",)) == []
    assert replay.calls == []


def test_rpm_failure_is_a_probe_error(tmp_path: Path) -> None:
    failure = ProbeError("rpm exited with status 1: error: cannot open Packages database")
    command = ("rpm", "-qa", "--queryformat", packages.RPM_QUERY)
    (tmp_path / "Packages").write_bytes(b"")
    with pytest.raises(ProbeError, match="Packages database"):
        packages.collect_rpm_packages(RecordedRunner({command: failure}), (tmp_path,))


@pytest.mark.skipif(
    not (packages.DPKG_ADMINDIR / "status").is_file(), reason="this host has no dpkg database"
)
def test_this_hosts_deb_packages() -> None:
    rows = packages.collect_deb_packages()
    names = {row["name"]: row for row in rows}
    assert {"dpkg", "libc6"} <= names.keys()
    assert names["dpkg"]["status"].endswith(" installed")
    assert names["dpkg"]["admindir"] == "/var/lib/dpkg"
    assert all(row["size"].isdigit() for row in rows if row["size"])
    assert all(tuple(row) == columns_for("deb_packages", "linux") for row in rows)


def test_rpm_database_needs_a_non_empty_directory(tmp_path: Path) -> None:
    empty, sysimage = tmp_path / "var-lib-rpm", tmp_path / "sysimage-rpm"
    empty.mkdir()
    sysimage.mkdir()
    assert not packages.rpm_database_present((empty, sysimage, tmp_path / "missing"))
    (sysimage / "rpmdb.sqlite").write_bytes(b"SQLite format 3\0")
    assert packages.rpm_database_present((empty, sysimage))
