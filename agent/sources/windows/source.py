"""``WindowsNativeSource``: the catalogue's Windows tables, gathered without osquery.

One collector per table, each in the module named after what it reads; this class maps
table names to them and turns any unexpected failure into a ProbeError, so one unreadable
table never stops the others. Every command goes through the ``Runner`` (tests hand it a
``RecordedRunner`` and a ``platform`` of "windows" to replay recordings on any machine).

Each PowerShell probe is its own process: a hung cmdlet costs only its table, at the price
of PowerShell's start-up (about 0.3-1 s of CPU) per table the plan asks for.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from agent.runner import DEFAULT_RUNNER, Runner
from agent.sources.base import NativeSource, Row, TableCollector
from agent.sources.windows import (
    accounts,
    bitlocker,
    defender,
    firewall,
    firmware,
    registry,
    secpol,
    security_center,
    software,
    system,
    updates,
)
from agent.sources.windows import services as service_table
from agent.sources.windows.common import POWERSHELL_TIMEOUT

__all__ = ["WindowsNativeSource"]


class WindowsNativeSource(NativeSource):
    """Windows tables from PowerShell (JSON), secedit, dsregcmd and psutil.

    ``timeout`` bounds each probe in seconds; ``platform`` overrides the detected one
    (tests replay Windows recordings on Linux with ``platform="windows"``), and
    ``services`` replaces ``psutil.win_service_iter``, which exists on Windows only.
    """

    def __init__(
        self,
        runner: Runner = DEFAULT_RUNNER,
        *,
        timeout: float = POWERSHELL_TIMEOUT,
        platform: str | None = None,
        services: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        this_platform = platform or ("windows" if sys.platform == "win32" else sys.platform)
        run = runner
        list_services = services

        def probe(read: Callable[[Runner, float], list[Row]]) -> TableCollector:
            return lambda _request: read(run, timeout)

        collectors: dict[str, TableCollector] = {
            "os_version": probe(system.collect_os_version),
            "windows_device_join": probe(system.collect_device_join),
            "users": probe(accounts.collect_users),
            "groups": probe(accounts.collect_groups),
            "user_groups": probe(accounts.collect_user_groups),
            "windows_local_group_members": probe(accounts.collect_group_members),
            "bitlocker_info": probe(bitlocker.collect_bitlocker_info),
            "windows_security_products": probe(security_center.collect_security_products),
            "windows_security_center": probe(security_center.collect_security_center),
            "windows_defender_status": probe(defender.collect_defender_status),
            "windows_firewall_profiles": probe(firewall.collect_firewall_profiles),
            "patches": probe(updates.collect_patches),
            "windows_update_history": probe(updates.collect_update_history),
            "security_profile_info": probe(secpol.collect_security_profile),
            "secureboot": probe(firmware.collect_secureboot),
            "tpm_info": probe(firmware.collect_tpm_info),
            "programs": probe(software.collect_programs),
            "services": lambda _request: service_table.collect_services(list_services),
            "registry": lambda request: registry.collect_registry(run, request.paths, timeout),
        }
        super().__init__(this_platform, "windows", "Windows", collectors)
