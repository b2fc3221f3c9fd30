"""Network exposure: ``listening_ports`` and ``interface_addresses``.

Listening sockets come from psutil's one pass over /proc/net/{tcp,udp}{,6} and the file
descriptors of every process (that pass is how a socket is tied to a pid and so to an
executable path). Only internet sockets are reported: osquery also lists UNIX sockets with
their paths, which no posture check reads and which would bloat the table.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

import psutil

from agent.sources.base import Row
from agent.sources.linux.common import make_row
from agent.sources.linux.processes import read_exe

__all__ = ["collect_interface_addresses", "collect_listening_ports", "listening_rows"]

_PROTOCOL = {socket.SOCK_STREAM: "6", socket.SOCK_DGRAM: "17"}


def _is_listening(connection: Any) -> bool:
    """TCP in LISTEN, or UDP bound to a local port and not connected to a peer."""
    if not connection.laddr:
        return False
    if connection.type == socket.SOCK_STREAM:
        return bool(connection.status == psutil.CONN_LISTEN)
    return connection.type == socket.SOCK_DGRAM and not connection.raddr


def _net_namespace(pid: int) -> str:
    """The inode of the process's network namespace, as osquery prints it ("4026531840")."""
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""
    return link.partition("[")[2].rstrip("]")


def listening_rows(connections: Iterable[Any]) -> list[Row]:
    """Rows for psutil ``sconn`` tuples that are listening; pids resolve to exe paths."""
    rows = []
    details: dict[int, tuple[str, str]] = {}
    for connection in connections:
        if not _is_listening(connection):
            continue
        pid = connection.pid
        if pid is not None and pid not in details:
            details[pid] = (read_exe(pid), _net_namespace(pid))
        path, namespace = details.get(pid, ("", "")) if pid is not None else ("", "")
        values = {
            "pid": str(pid) if pid is not None else "",
            "port": str(connection.laddr.port),
            "protocol": _PROTOCOL[connection.type],
            "family": str(int(connection.family)),
            "address": connection.laddr.ip.partition("%")[0],
            "fd": str(connection.fd) if connection.fd not in (None, -1) else "",
            "path": path,
            "net_namespace": namespace,
        }
        rows.append(make_row("listening_ports", values))
    return rows


def collect_listening_ports() -> list[Row]:
    """Sockets of every process; pids and paths are "" for sockets the agent cannot see."""
    return listening_rows(psutil.net_connections(kind="inet"))


def collect_interface_addresses() -> list[Row]:
    """IPv4 and IPv6 addresses of every interface (link-layer addresses are skipped)."""
    rows = []
    families = (socket.AF_INET, socket.AF_INET6)
    for interface, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if address.family not in families:
                continue
            values = {
                "interface": interface,
                "address": address.address.partition("%")[0],
                "mask": address.netmask or "",
                "broadcast": address.broadcast or "",
                "point_to_point": address.ptp or "",
            }
            rows.append(make_row("interface_addresses", values))
    return rows
