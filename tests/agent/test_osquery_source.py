"""The osquery client and fact source, against a fake osqueryd speaking the real Thrift protocol.

The fake (``tests/fakes/osqueryd.py``) serves osquery-python's own generated
``ExtensionManager`` processor on a real Unix socket and runs each query's SQL in SQLite, so
these tests exercise the real client, framing and SQL. One test, marked ``osquery``, uses a
real osqueryd when this machine has one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent.osquery_client import (
    OsqueryClient,
    OsqueryError,
    OsqueryUnavailable,
    default_socket_path,
)
from agent.sources.base import FactSource, ProbeError, TableRequest
from agent.sources.osquery import OsquerySource, quote_literal
from protos.posture.v1.tables import columns_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake needs Unix sockets")


def _load_fake() -> ModuleType:
    """Load tests/fakes/osqueryd.py by path: pytest's importlib mode has no test packages."""
    path = Path(__file__).parents[1] / "fakes" / "osqueryd.py"
    spec = importlib.util.spec_from_file_location("posture_fake_osqueryd", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()

QUOTED_PATH = "/home/o'brien/.ssh/authorized_keys"

CANNED: dict[str, list[dict[str, str]]] = {
    # An older osqueryd: no "codename" or "arch" columns, and one the catalogue lacks.
    "os_version": [
        {
            "name": "Ubuntu",
            "version": "24.04.1 LTS (Noble Numbat)",
            "major": "24",
            "minor": "4",
            "patch": "1",
            "build": "",
            "platform": "ubuntu",
            "platform_like": "debian",
            "pid_with_namespace": "0",
        }
    ],
    "processes": [
        {"pid": "1", "name": "systemd", "path": "/usr/lib/systemd/systemd", "uid": "0"},
        {"pid": "812", "name": "sshd", "path": "/usr/sbin/sshd", "uid": "0"},
    ],
    "groups": [{"gid": "0", "gid_signed": "0", "groupname": "root"}],
    "system_controls": [
        {"name": "kernel.randomize_va_space", "current_value": "2", "subsystem": "kernel"},
        {"name": "fs.dentry-state", "current_value": "81231\t62210\t45", "subsystem": "fs"},
        {"name": "kernel.random.uuid", "current_value": "9b1f", "subsystem": "kernel"},
    ],
    "file": [
        {"path": "/etc/passwd", "directory": "/etc", "filename": "passwd", "mode": "0644"},
        {"path": "/etc/shadow", "directory": "/etc", "filename": "shadow", "mode": "0640"},
        {"path": "/etc/ssh/sshd_config", "directory": "/etc/ssh", "mode": "0600"},
        {"path": QUOTED_PATH, "directory": "/home/o'brien/.ssh", "mode": "0600"},
    ],
    "hash": [
        {"path": "/etc/passwd", "directory": "/etc", "sha256": "ab12"},
        {"path": "/etc/shadow", "directory": "/etc", "sha256": "cd34"},
    ],
    # Present in osqueryd but not claimed on Linux: Posture's own table (as the macadmins
    # extension registers it) and a macOS-only table.
    "file_lines": [{"path": "/etc/hosts", "line": "127.0.0.1 localhost"}],
    "alf": [{"global_state": "1"}],
}


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A short socket path: Unix socket paths are limited to about 104 bytes."""
    with tempfile.TemporaryDirectory(prefix="pq-") as directory:
        yield os.path.join(directory, "osquery.em")


@pytest.fixture
def osqueryd(socket_path: str) -> Iterator[Any]:
    with fake.serve_fake_osqueryd(socket_path, CANNED) as handler:
        yield handler


@pytest.fixture
def source(socket_path: str, osqueryd: Any) -> Iterator[OsquerySource]:
    osquery_source = OsquerySource(socket_path, platform="linux")
    yield osquery_source
    osquery_source.close()


# --- the client ------------------------------------------------------------------------


def test_default_socket_paths() -> None:
    assert default_socket_path("linux") == "/var/osquery/osquery.em"
    assert default_socket_path("darwin") == "/var/osquery/osquery.em"
    assert default_socket_path("windows") == r"\\.\pipe\osquery.em"


def test_missing_socket_raises_at_once_naming_the_path(socket_path: str) -> None:
    started = time.monotonic()
    with pytest.raises(OsqueryUnavailable, match="socket missing") as raised:
        OsqueryClient(socket_path).open()
    assert time.monotonic() - started < 0.5
    assert raised.value.path == socket_path
    assert socket_path in str(raised.value)


def test_stale_socket_is_refused(socket_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(socket_path)  # bound, never listening: what a crashed osqueryd leaves
    with pytest.raises(OsqueryUnavailable, match="connection refused"):
        OsqueryClient(socket_path).open()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_root_only_socket_is_permission_denied(socket_path: str, osqueryd: Any) -> None:
    os.chmod(socket_path, 0o000)
    with pytest.raises(OsqueryUnavailable, match="permission denied"):
        OsqueryClient(socket_path).open()


def test_connect_failure_keeps_thrift_out_of_the_log(
    socket_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(OsqueryUnavailable):
        OsqueryClient(socket_path).open()
    assert [record for record in caplog.records if record.name.startswith("thrift")] == []


def test_query_returns_canned_rows_over_thrift(socket_path: str, osqueryd: Any) -> None:
    with OsqueryClient(socket_path) as client:
        rows = client.query("SELECT pid, name FROM processes ORDER BY CAST(pid AS INTEGER)")
        client.ping()
    assert rows == [{"pid": "1", "name": "systemd"}, {"pid": "812", "name": "sshd"}]
    assert not client.is_open


def test_invalid_query_raises_osquery_error(socket_path: str, osqueryd: Any) -> None:
    with OsqueryClient(socket_path) as client:
        with pytest.raises(OsqueryError) as raised:
            client.query("SELECT * FROM no_such_table")
        assert raised.value.code == 1
        assert raised.value.message == "no such table: no_such_table"
        assert raised.value.sql == "SELECT * FROM no_such_table"
        # The connection survives a failed query.
        assert client.query("SELECT groupname FROM groups") == [{"groupname": "root"}]


def test_query_columns_lists_names_without_rows(socket_path: str, osqueryd: Any) -> None:
    with OsqueryClient(socket_path) as client:
        columns = client.query_columns("SELECT gid, groupname FROM groups")
    assert columns == [("gid", "TEXT"), ("groupname", "TEXT")]


def test_query_before_open_raises(socket_path: str) -> None:
    with pytest.raises(OsqueryUnavailable, match="not connected"):
        OsqueryClient(socket_path).query("SELECT 1")


def test_wedged_osqueryd_times_out_instead_of_hanging(socket_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wedged:
        wedged.bind(socket_path)
        wedged.listen()  # connections queue up, but nothing ever answers
        client = OsqueryClient(socket_path, query_timeout=0.2)
        client.open()
        with pytest.raises(OsqueryUnavailable, match=r"no answer within 0\.2s"):
            client.query("SELECT 1")
        assert not client.is_open


def test_lost_connection_raises_unavailable_and_closes(socket_path: str) -> None:
    client = OsqueryClient(socket_path)
    with fake.serve_fake_osqueryd(socket_path, CANNED):
        client.open()
    with pytest.raises(OsqueryUnavailable, match="not reachable"):
        client.query("SELECT 1")
    assert not client.is_open


# --- the source ------------------------------------------------------------------------


def test_source_implements_fact_source(source: OsquerySource) -> None:
    as_protocol: FactSource = source
    assert as_protocol.name == "osquery"
    assert source.available()


def test_tables_are_catalogue_tables_osqueryd_has(source: OsquerySource) -> None:
    # Not osquery_info/osquery_registry (no catalogue entry), file_lines (Posture's own
    # table), alf (macOS) or deb_packages (this osqueryd lacks it).
    assert source.tables() == {
        "os_version",
        "processes",
        "groups",
        "system_controls",
        "file",
        "hash",
    }


def test_collect_returns_exactly_the_catalogue_columns(source: OsquerySource) -> None:
    [row] = source.collect(TableRequest("os_version"))
    assert tuple(row) == columns_for("os_version", "linux")
    assert row["name"] == "Ubuntu"
    assert row["platform_like"] == "debian"
    assert row["codename"] == "" and row["arch"] == ""  # this osqueryd predates them
    assert "pid_with_namespace" not in row


def test_collect_asks_only_for_columns_osqueryd_has(source: OsquerySource, osqueryd: Any) -> None:
    source.collect(TableRequest("os_version"))
    [select] = [sql for sql in osqueryd.queries if sql.startswith('SELECT "name"')]
    assert '"codename"' not in select and '"arch"' not in select


def test_collect_all_rows_with_keyword_table_names(source: OsquerySource) -> None:
    assert [row["name"] for row in source.collect(TableRequest("processes"))] == [
        "systemd",
        "sshd",
    ]
    assert source.collect(TableRequest("groups"))[0]["groupname"] == "root"


def test_counters_are_left_out_of_system_controls(source: OsquerySource) -> None:
    rows = source.collect(TableRequest("system_controls"))
    assert [row["name"] for row in rows] == ["kernel.randomize_va_space"]


def test_path_table_is_filtered_by_like_patterns(source: OsquerySource) -> None:
    rows = source.collect(TableRequest("file", ("/etc/ssh/%", "/etc/passwd")))
    assert sorted(row["path"] for row in rows) == ["/etc/passwd", "/etc/ssh/sshd_config"]
    assert all(tuple(row) == columns_for("file", "linux") for row in rows)


def test_registry_is_filtered_by_key_not_value_path(socket_path: str) -> None:
    key = r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows\Control Panel\Desktop"
    values = [
        {
            "key": key,
            "path": key + r"\ScreenSaveTimeOut",
            "name": "ScreenSaveTimeOut",
            "data": "900",
        },
        {"key": key + "X", "path": key + r"X\Other", "name": "Other", "data": "1"},
    ]
    with fake.serve_fake_osqueryd(socket_path, {"registry": values}):
        windows = OsquerySource(socket_path, platform="windows")
        rows = windows.collect(TableRequest("registry", (key,)))
        windows.close()
    assert [row["name"] for row in rows] == ["ScreenSaveTimeOut"]


def test_system_controls_are_read_for_the_planned_names(socket_path: str) -> None:
    rows = [
        {"name": name, "current_value": "1", "subsystem": name.partition(".")[0]}
        for name in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "vm.swappiness")
    ]
    with fake.serve_fake_osqueryd(socket_path, {"system_controls": rows}) as osqueryd:
        source = OsquerySource(socket_path, platform="linux")
        named = source.collect(TableRequest("system_controls", ("net.ipv4.conf.%", "x'y")))
        every = source.collect(TableRequest("system_controls"))
        source.close()
    assert [row["name"] for row in named] == ["net.ipv4.conf.all.rp_filter"]
    assert len(every) == 3  # no names: every row, as a plan from an older collector asks
    queries = [sql for sql in osqueryd.queries if 'FROM "system_controls" WHERE' in sql]
    wheres = [sql.partition(" WHERE ")[2] for sql in queries]
    assert wheres == [""""name" LIKE 'net.ipv4.conf.%' OR "name" LIKE 'x''y'"""]


def test_path_with_a_quote_is_escaped(source: OsquerySource, osqueryd: Any) -> None:
    rows = source.collect(TableRequest("file", (QUOTED_PATH,)))
    assert [row["path"] for row in rows] == [QUOTED_PATH]
    assert """"path" LIKE '/home/o''brien/.ssh/authorized_keys'""" in osqueryd.queries[-1]


def test_quote_cannot_break_out_of_the_pattern(source: OsquerySource) -> None:
    injection = "/nothing' OR '1'='1"
    assert source.collect(TableRequest("hash", (injection,))) == []
    assert len(source.collect(TableRequest("hash", ("/etc/%",)))) == 2


@pytest.mark.parametrize(
    ("value", "literal"),
    [("/etc/passwd", "'/etc/passwd'"), ("it's", "'it''s'"), ("''", "''''''"), ("", "''")],
)
def test_quote_literal(value: str, literal: str) -> None:
    assert quote_literal(value) == literal


def test_nul_in_a_path_is_a_probe_error(source: OsquerySource) -> None:
    with pytest.raises(ProbeError, match="NUL"):
        source.collect(TableRequest("file", ("/etc/\0passwd",)))


def test_path_table_without_paths_reads_nothing(source: OsquerySource, osqueryd: Any) -> None:
    asked_before = len(osqueryd.queries)
    assert source.collect(TableRequest("hash")) == []
    assert len(osqueryd.queries) == asked_before


def test_table_osqueryd_lacks_is_a_probe_error(source: OsquerySource) -> None:
    with pytest.raises(ProbeError, match=r"^osquery: no such table: deb_packages$"):
        source.collect(TableRequest("deb_packages"))


@pytest.mark.parametrize("table", ["file_lines", "alf", "nonsense"])
def test_tables_the_source_cannot_claim_are_probe_errors(source: OsquerySource, table: str) -> None:
    with pytest.raises(ProbeError, match=f"osquery: {table} is not an osquery table"):
        source.collect(TableRequest(table))


def test_unreachable_socket_is_a_probe_error(socket_path: str) -> None:
    source = OsquerySource(socket_path, platform="linux")
    assert not source.available()
    assert source.tables() == frozenset()
    with pytest.raises(ProbeError, match=f"osquery socket {socket_path} not reachable"):
        source.collect(TableRequest("processes"))


def test_source_reconnects_after_osqueryd_restarts(socket_path: str) -> None:
    source = OsquerySource(socket_path, platform="linux")
    with fake.serve_fake_osqueryd(socket_path, CANNED):
        assert len(source.collect(TableRequest("processes"))) == 2
    upgraded = {"processes": [{"pid": "1", "name": "init", "cgroup_path": "/init.scope"}]}
    with fake.serve_fake_osqueryd(socket_path, upgraded) as restarted:
        [row] = source.collect(TableRequest("processes"))
        assert (row["name"], row["cgroup_path"]) == ("init", "/init.scope")
        assert source.tables() == {"processes"}  # the registry is re-read after a restart
        assert 'SELECT * FROM "processes"' in restarted.queries  # and so are the columns
    source.close()


def test_source_gives_up_after_one_reconnect(socket_path: str) -> None:
    source = OsquerySource(socket_path, platform="linux")
    with fake.serve_fake_osqueryd(socket_path, CANNED):
        assert source.available()
    started = time.monotonic()
    with pytest.raises(ProbeError, match="socket missing"):
        source.collect(TableRequest("processes"))
    assert time.monotonic() - started < 0.5
    assert not source.available()


def test_cached_connection_is_reused(source: OsquerySource, osqueryd: Any) -> None:
    source.collect(TableRequest("processes"))
    source.collect(TableRequest("processes"))
    column_lookups = [sql for sql in osqueryd.queries if sql.startswith("SELECT *")]
    assert column_lookups == ['SELECT * FROM "processes"']


# --- a real osqueryd -------------------------------------------------------------------


def _spawn_osqueryd(binary: str, socket_path: str) -> subprocess.Popen[bytes]:
    """An ephemeral osqueryd with no config, database or logs, as osquery-python's tests do."""
    flags = ["--ephemeral", "--disable_database", "--disable_watchdog", "--disable_logging"]
    return subprocess.Popen(
        [binary, "--extensions_socket", socket_path, "--config_path", os.devnull, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def real_osquery_socket(socket_path: str) -> Iterator[str]:
    """A running osqueryd's socket ($POSTURE_OSQUERY_SOCKET, the default, or one we spawn)."""
    for path in (os.environ.get("POSTURE_OSQUERY_SOCKET"), default_socket_path()):
        if path and os.path.exists(path):
            yield path
            return
    binary = shutil.which("osqueryd")
    if binary is None:
        pytest.skip("no osqueryd binary or socket on this machine")
    process = _spawn_osqueryd(binary, socket_path)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.osquery
def test_real_osqueryd(real_osquery_socket: str, tmp_path: Path) -> None:
    source = OsquerySource(real_osquery_socket)
    if not source.available():
        pytest.skip(f"osqueryd at {real_osquery_socket} does not answer (permissions?)")
    assert {"os_version", "processes", "file"} <= source.tables()
    [os_version] = source.collect(TableRequest("os_version"))
    assert tuple(os_version) == columns_for("os_version", source.platform)
    quoted, plain = tmp_path / "it's here.txt", tmp_path / "plain.txt"
    quoted.write_text("x")
    plain.write_text("xy")
    rows = source.collect(TableRequest("file", (str(quoted), str(plain))))
    assert sorted((row["path"], row["size"]) for row in rows) == [
        (str(quoted), "1"),
        (str(plain), "2"),
    ]
    source.close()
    with OsqueryClient(real_osquery_socket) as client, pytest.raises(OsqueryError) as raised:
        client.query("SELECT * FROM no_such_table")
    assert (raised.value.code, raised.value.message) == (1, "no such table: no_such_table")
