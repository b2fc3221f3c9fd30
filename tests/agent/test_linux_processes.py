"""processes from /proc files, and listening_ports from socket tuples."""

from __future__ import annotations

import socket
from typing import NamedTuple

from agent.sources.linux import network, processes
from protos.posture.v1.tables import columns_for

# /proc/<pid>/stat of tmux, whose comm holds a space, a colon and parentheses.
TMUX_STAT = (
    "4242 (tmux: server (1)) S 1 4242 4242 0 -1 4194624 1380 0 0 0 250 130 0 0 20 5 1 0 "
    "51234 12169216 1158 18446744073709551615 1 1 0 0 0 0 0 4098 134433281 0 0 0 17 3 0 0 0 0 0\n"
)
TMUX_STATUS = """\
Name:\ttmux: server (1)
Umask:\t0002
State:\tS (sleeping)
Tgid:\t4242
PPid:\t1
Uid:\t1000\t1000\t1000\t1000
Gid:\t1000\t1001\t1002\t1000
Threads:\t1
"""


def test_stat_line_with_parentheses_in_the_name() -> None:
    fields = processes.parse_proc_stat(TMUX_STAT)
    assert fields == processes.ProcStat(
        comm="tmux: server (1)",
        state="S",
        ppid=1,
        pgrp=4242,
        utime=250,
        stime=130,
        nice=5,
        threads=1,
        starttime=51234,
        vsize=12169216,
        rss=1158,
    )


def test_process_row_from_proc_files() -> None:
    links = ("/usr/bin/tmux (deleted)", "/home/alice", "/")
    cmdline = b"tmux\0new-session\0-s\0work\0"
    row = processes.process_row(4242, TMUX_STAT, TMUX_STATUS, cmdline, 1_700_000_000.0, links)
    assert tuple(row) == columns_for("processes", "linux")
    ticks = processes.CLOCK_TICKS
    expected = {
        "pid": "4242",
        "name": "tmux: server (1)",
        "path": "/usr/bin/tmux",
        "on_disk": "0",
        "cmdline": "tmux new-session -s work",
        "state": "S",
        "cwd": "/home/alice",
        "root": "/",
        "uid": "1000",
        "euid": "1000",
        "suid": "1000",
        "gid": "1000",
        "egid": "1001",
        "sgid": "1002",
        "parent": "1",
        "pgroup": "4242",
        "nice": "5",
        "threads": "1",
        "user_time": str(250 * 1000 // ticks),
        "system_time": str(130 * 1000 // ticks),
        "start_time": str(int(1_700_000_000 + 51234 / ticks)),
        "total_size": "12169216",
        "resident_size": str(1158 * processes.PAGE_SIZE),
    }
    assert {column: row[column] for column in expected} == expected
    assert row["disk_bytes_read"] == row["cgroup_path"] == ""


def test_kernel_thread_has_no_path() -> None:
    stat = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 20 0 1 0 2 0 0 18446744073709551615"
    row = processes.process_row(2, stat, "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", b"", 0.0)
    assert (row["path"], row["on_disk"], row["cmdline"], row["uid"]) == ("", "-1", "", "0")


class Address(NamedTuple):
    ip: str
    port: int


class Connection(NamedTuple):
    """The shape of psutil's ``sconn``."""

    fd: int
    family: socket.AddressFamily
    type: socket.SocketKind
    laddr: Address | tuple[()]
    raddr: Address | tuple[()]
    status: str
    pid: int | None


def test_listening_rows_keep_listeners_and_bound_udp_only() -> None:
    connections = [
        Connection(
            3, socket.AF_INET, socket.SOCK_STREAM, Address("0.0.0.0", 22), (), "LISTEN", None
        ),
        Connection(4, socket.AF_INET6, socket.SOCK_STREAM, Address("::", 443), (), "LISTEN", None),
        Connection(
            5,
            socket.AF_INET,
            socket.SOCK_STREAM,
            Address("10.0.0.5", 51000),
            Address("1.1.1.1", 443),
            "ESTABLISHED",
            None,
        ),
        Connection(
            6, socket.AF_INET, socket.SOCK_DGRAM, Address("127.0.0.53", 53), (), "NONE", None
        ),
        Connection(
            7,
            socket.AF_INET,
            socket.SOCK_DGRAM,
            Address("10.0.0.5", 40000),
            Address("8.8.8.8", 53),
            "NONE",
            None,
        ),
        Connection(
            -1, socket.AF_INET6, socket.SOCK_DGRAM, Address("fe80::1%eth0", 546), (), "NONE", None
        ),
    ]
    rows = network.listening_rows(connections)
    assert all(tuple(row) == columns_for("listening_ports", "linux") for row in rows)
    summary = [
        (row["protocol"], row["family"], row["address"], row["port"], row["fd"]) for row in rows
    ]
    assert summary == [
        ("6", "2", "0.0.0.0", "22", "3"),
        ("6", "10", "::", "443", "4"),
        ("17", "2", "127.0.0.53", "53", "6"),
        ("17", "10", "fe80::1", "546", ""),
    ]
    assert {row["pid"] for row in rows} == {""}
