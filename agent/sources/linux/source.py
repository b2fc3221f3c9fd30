"""``LinuxNativeSource``: the catalogue's Linux tables, gathered without osquery.

One collector function per table, each in the module named after what it reads. This class
only decides which tables this host can produce and turns unexpected OS errors into
ProbeErrors, so one unreadable table never stops the others from being collected.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import psutil

from agent.runner import DEFAULT_RUNNER, Runner
from agent.sources.base import ProbeError, Row, TableRequest
from agent.sources.linux import (
    accounts,
    encryption,
    files,
    kernel,
    network,
    packages,
    processes,
    services,
    shadow,
    ssh,
    storage,
    sudoers,
    sysctl,
    system,
)

__all__ = ["LinuxNativeSource"]

Collector = Callable[[TableRequest], list[Row]]

#: Tables whose source exists on every Linux host.
_ALWAYS = frozenset(
    {
        "os_version",
        "system_info",
        "kernel_info",
        "uptime",
        "users",
        "groups",
        "user_groups",
        "shadow",
        "sudoers",
        "authorized_keys",
        "processes",
        "listening_ports",
        "interface_addresses",
        "logged_in_users",
        "mounts",
        "disk_encryption",
        "deb_packages",
        "rpm_packages",
        "kernel_modules",
        "system_controls",
        "systemd_units",
        "file",
        "hash",
        "file_lines",
    }
)


class LinuxNativeSource:
    """Linux tables from /proc, /sys, /etc, psutil, dpkg's database and a few commands.

    ``runner`` runs the commands (``rpm``, ``systemctl``, ``cryptsetup``); tests pass one
    that replays recorded output.
    """

    name = "native"

    def __init__(self, runner: Runner = DEFAULT_RUNNER) -> None:
        self._runner = runner
        self._collectors: dict[str, Collector] = {
            "os_version": lambda _: system.collect_os_version(),
            "system_info": lambda _: system.collect_system_info(),
            "kernel_info": lambda _: system.collect_kernel_info(),
            "uptime": lambda _: system.collect_uptime(),
            "users": lambda _: accounts.collect_users(),
            "groups": lambda _: accounts.collect_groups(),
            "user_groups": lambda _: accounts.collect_user_groups(),
            "logged_in_users": lambda _: accounts.collect_logged_in_users(),
            "shadow": lambda _: shadow.collect_shadow(),
            "sudoers": lambda _: sudoers.collect_sudoers(),
            "authorized_keys": lambda _: ssh.collect_authorized_keys(),
            "processes": lambda _: processes.collect_processes(),
            "listening_ports": lambda _: network.collect_listening_ports(),
            "interface_addresses": lambda _: network.collect_interface_addresses(),
            "deb_packages": lambda request: packages.collect_deb_packages(request.columns),
            "rpm_packages": lambda _: packages.collect_rpm_packages(self._runner),
            "mounts": lambda _: storage.collect_mounts(),
            "disk_encryption": lambda _: encryption.collect_disk_encryption(self._runner),
            "kernel_modules": lambda _: kernel.collect_kernel_modules(),
            "system_controls": lambda request: sysctl.collect_system_controls(request.paths),
            "systemd_units": lambda _: services.collect_systemd_units(self._runner),
            "file": lambda request: files.file_rows(request.paths),
            "hash": lambda request: files.hash_rows(request.paths),
            "file_lines": lambda request: files.file_line_rows(request.paths),
        }

    def available(self) -> bool:
        return sys.platform.startswith("linux")

    def tables(self) -> frozenset[str]:
        """Every table in ``_ALWAYS``, plus those whose data source exists on this host."""
        if not self.available():
            return frozenset()
        return _ALWAYS

    def collect(self, request: TableRequest) -> list[Row]:
        if request.name not in self.tables():
            raise ProbeError(f"the native Linux source cannot produce {request.name} on this host")
        try:
            return self._collectors[request.name](request)
        except (OSError, ValueError, psutil.Error) as error:
            raise ProbeError(f"{request.name}: {type(error).__name__}: {error}") from None
