"""LinuxNativeSource on this machine: which tables it offers, and that every row is well-shaped."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runner import RecordedRunner
from agent.sources.base import FactSource, ProbeError, Row, TableRequest
from agent.sources.linux import LinuxNativeSource
from protos.posture.v1.tables import PATH_TABLES, columns_for, platform_tables

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux source")

PATHS = ("/etc/passwd", "/etc/hostname", "/etc/%.conf", "/does/not/exist")


@pytest.fixture(scope="module")
def source() -> LinuxNativeSource:
    return LinuxNativeSource()


def _collect_or_error(source: LinuxNativeSource, table: str) -> list[Row] | ProbeError:
    paths = PATHS if table in PATH_TABLES else ()
    try:
        return source.collect(TableRequest(table, paths))
    except ProbeError as error:
        return error


def test_it_is_a_fact_source_named_native(source: LinuxNativeSource) -> None:
    as_protocol: FactSource = source
    assert as_protocol.name == "native"
    assert source.available()


def test_offers_only_catalogue_tables_and_what_this_host_has(source: LinuxNativeSource) -> None:
    tables = source.tables()
    assert tables <= {table.name for table in platform_tables("linux")}
    assert {"os_version", "users", "processes", "mounts", "systemd_units", "file_lines"} <= tables
    assert ("deb_packages" in tables) == Path("/var/lib/dpkg/status").is_file()
    assert "kernel_modules" in tables  # claimed always: an error where modules are unsupported


def test_other_tables_are_refused_with_a_reason(source: LinuxNativeSource) -> None:
    with pytest.raises(ProbeError, match="cannot produce bitlocker_info"):
        source.collect(TableRequest("bitlocker_info"))


def test_every_offered_table_has_exact_columns_and_string_values(source: LinuxNativeSource) -> None:
    systemd_running = Path("/run/systemd/system").is_dir()
    for table in sorted(source.tables()):
        result = _collect_or_error(source, table)
        if table == "systemd_units" and not systemd_running:
            assert isinstance(result, ProbeError) and "systemd is not running" in str(result)
            continue
        if table == "kernel_modules" and not Path("/proc/modules").exists():
            assert isinstance(result, ProbeError) and "no loadable module" in str(result)
            continue
        if table == "shadow" and os.geteuid() != 0:
            assert isinstance(result, ProbeError)
            continue
        assert not isinstance(result, ProbeError), f"{table}: {result}"
        for row in result:
            assert tuple(row) == columns_for(table, "linux"), table
            assert all(isinstance(value, str) for value in row.values()), table


def test_single_row_tables_have_one_row(source: LinuxNativeSource) -> None:
    for table in ("os_version", "system_info", "kernel_info", "uptime"):
        assert len(source.collect(TableRequest(table))) == 1, table


def test_path_tables_without_paths_are_empty(source: LinuxNativeSource) -> None:
    for table in sorted(PATH_TABLES & {t.name for t in platform_tables("linux")}):
        assert source.collect(TableRequest(table)) == []


def test_this_process_is_listed(source: LinuxNativeSource) -> None:
    rows = {row["pid"]: row for row in source.collect(TableRequest("processes"))}
    me = rows[str(os.getpid())]
    assert me["path"] == os.path.realpath(sys.executable)
    assert me["on_disk"] == "1"
    assert me["parent"] == str(os.getppid())
    assert (me["uid"], me["euid"]) == (str(os.getuid()), str(os.geteuid()))
    assert me["state"] in {"R", "S", "D"}
    arguments = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert me["cmdline"] == " ".join(argument.decode() for argument in arguments)
    assert int(me["resident_size"]) > 1_000_000 and int(me["threads"]) >= 1
    assert rows["1"]["parent"] == "0"


@pytest.fixture
def open_sockets() -> Iterator[tuple[int, int]]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("::1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]
    finally:
        tcp.close()
        udp.close()


def test_listening_ports_include_our_sockets(
    source: LinuxNativeSource, open_sockets: tuple[int, int]
) -> None:
    tcp_port, udp_port = open_sockets
    rows = source.collect(TableRequest("listening_ports"))
    mine = {(row["protocol"], row["port"]): row for row in rows if row["pid"] == str(os.getpid())}
    tcp, udp = mine[("6", str(tcp_port))], mine[("17", str(udp_port))]
    assert (tcp["family"], tcp["address"]) == ("2", "127.0.0.1")
    assert (udp["family"], udp["address"]) == ("10", "::1")
    assert tcp["path"] == os.path.realpath(sys.executable)
    assert tcp["fd"].isdigit() and tcp["net_namespace"].isdigit()


def test_interface_addresses_include_loopback(source: LinuxNativeSource) -> None:
    rows = source.collect(TableRequest("interface_addresses"))
    loopback = [row for row in rows if row["address"] == "127.0.0.1"]
    assert loopback and loopback[0]["mask"] == "255.0.0.0"


def test_commands_go_through_the_given_runner() -> None:
    runner = RecordedRunner({})
    source = LinuxNativeSource(runner=runner)
    source.collect(TableRequest("disk_encryption"))
    assert all(call[:2] == ("cryptsetup", "status") for call in runner.calls)
    if not Path("/run/systemd/system").is_dir():
        with pytest.raises(ProbeError, match="systemd is not running"):
            source.collect(TableRequest("systemd_units"))
    else:
        with pytest.raises(ProbeError, match="no recording"):
            source.collect(TableRequest("systemd_units"))
