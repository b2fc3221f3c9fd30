"""``MacosNativeSource``: the catalogue's macOS tables, gathered without osquery.

One collector per table, each in the module named after what it reads; this class maps
table names to them and turns unexpected failures into ProbeErrors so one unreadable
table never stops the others. Commands go through the ``Runner``; plist files are read
under ``root``. Tests replay recordings on any machine with a ``RecordedRunner``,
``platform="darwin"``, a ``root`` in a temporary directory and a ``machine``.
"""

from __future__ import annotations

import platform as platform_module
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from agent.runner import DEFAULT_RUNNER, Runner
from agent.sources.base import NativeSource, Row, TableCollector, TableRequest
from agent.sources.macos import (
    accounts,
    encryption,
    management,
    passwords,
    preferences,
    security,
    system,
    updates,
)
from agent.sources.macos.common import COMMAND_TIMEOUT

__all__ = ["MacosNativeSource"]

Collector = Callable[[TableRequest], list[Row]]

#: Where APFS mounts the startup disk's writable (FileVault-encrypted) data volume.
_DATA_VOLUME = "/System/Volumes/Data"


def _startup_device() -> str:
    """The device of the data volume (or of / on older macOS), "" if not mounted."""
    mounts = {partition.mountpoint: partition.device for partition in psutil.disk_partitions()}
    return mounts.get(_DATA_VOLUME) or mounts.get("/", "")


class MacosNativeSource(NativeSource):
    """macOS tables from Apple's command-line tools, plists and the C library."""

    def __init__(
        self,
        runner: Runner = DEFAULT_RUNNER,
        *,
        timeout: float = COMMAND_TIMEOUT,
        platform: str | None = None,
        root: Path = Path("/"),
        machine: str | None = None,
    ) -> None:
        this_platform = platform or sys.platform
        arch = machine or platform_module.machine()
        run = runner

        def probe(read: Callable[[Runner, float], list[Row]]) -> TableCollector:
            return lambda _request: read(run, timeout)

        collectors: dict[str, TableCollector] = {
            "os_version": lambda _: system.collect_os_version(run, timeout, arch),
            "disk_encryption": lambda _: encryption.collect_disk_encryption(
                run, timeout, _startup_device()
            ),
            "sip_config": probe(security.collect_sip_config),
            "gatekeeper": probe(security.collect_gatekeeper),
            "alf": probe(security.collect_alf),
            "mdm": probe(management.collect_mdm),
            "macos_firmware_password": lambda _: management.collect_firmware_password(
                run, timeout, arch
            ),
            "password_policy": probe(passwords.collect_password_policy),
            "software_update": lambda _: updates.collect_software_update(run, timeout, root),
            "software_update_available": lambda _: updates.collect_available_updates(run),
            "managed_policies": lambda _: preferences.collect_managed_policies(root),
            "macos_screenlock_policy": lambda _: preferences.collect_screenlock_policy(root),
            "users": lambda _: accounts.collect_users(),
            "groups": lambda _: accounts.collect_groups(),
            "user_groups": lambda _: accounts.collect_user_groups(),
        }
        super().__init__(this_platform, "darwin", "macOS", collectors)
