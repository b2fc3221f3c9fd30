"""``secureboot`` and ``tpm_info``: the machine's boot integrity and its TPM.

``secureboot.secure_boot`` is ``Confirm-SecureBootUEFI``: it prints ``True`` or ``False``
(Boolean's invariant text, never translated), and on a machine that boots with legacy BIOS
it throws PlatformNotSupportedException, which the script turns into ``Unsupported``: such
a machine has no Secure Boot, so the column reads 0. ``setup_mode`` is not read (""). The
cmdlet needs administrator rights.

``tpm_info`` joins ``Get-Tpm`` (present, enabled, activated, owned; manufacturer) with the
``Win32_Tpm`` CIM class osquery reads for the versions Get-Tpm lacks:

========================  ====================================  =========================
column                    source                                values
========================  ====================================  =========================
activated/enabled/owned   Get-Tpm TpmActivated/Enabled/Owned    true/false -> 1/0
manufacturer_id           Get-Tpm ManufacturerId                number (1229870147 is
                                                                "INTC")
manufacturer_name         Get-Tpm ManufacturerIdTxt             as is
manufacturer_version      Get-Tpm ManufacturerVersion           as is
product_name              Win32_Tpm ManufacturerVersionInfo     as is
physical_presence_version Win32_Tpm PhysicalPresenceVersionInfo as is
spec_version              Win32_Tpm SpecVersion                 e.g. "2.0, 0, 1.59"
========================  ====================================  =========================

A machine without a TPM (TpmPresent false) has no row, as in osquery.
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import (
    Record,
    flag,
    integer,
    make_row,
    powershell,
    powershell_json,
    run_json,
    text,
)

__all__ = [
    "SECUREBOOT_COMMAND",
    "TPM_COMMAND",
    "collect_secureboot",
    "collect_tpm_info",
    "secureboot_rows",
    "tpm_rows",
]

SECUREBOOT_COMMAND = powershell(
    "try { Confirm-SecureBootUEFI } catch [System.PlatformNotSupportedException] { 'Unsupported' }"
)

TPM_COMMAND = powershell_json(
    "$tpm = Get-Tpm; "
    "$cim = Get-CimInstance -Namespace root/cimv2/Security/MicrosoftTpm -ClassName Win32_Tpm; "
    "$tpm | Select-Object TpmPresent, TpmReady, TpmEnabled, TpmActivated, TpmOwned, "
    "ManufacturerId, ManufacturerIdTxt, ManufacturerVersion, "
    "@{ Name = 'ManufacturerVersionInfo'; Expression = { $cim.ManufacturerVersionInfo } }, "
    "@{ Name = 'PhysicalPresenceVersionInfo'; Expression = { $cim.PhysicalPresenceVersionInfo } }, "
    "@{ Name = 'SpecVersion'; Expression = { $cim.SpecVersion } }"
)

_SECURE_BOOT = {"True": "1", "False": "0", "Unsupported": "0"}


def secureboot_rows(output: str) -> list[Row]:
    """The one row from Confirm-SecureBootUEFI's ``True``/``False``/``Unsupported``."""
    answer = output.strip()
    if answer not in _SECURE_BOOT:
        raise ProbeError(f"secureboot: unexpected Confirm-SecureBootUEFI output {answer[:60]!r}")
    return [make_row("secureboot", {"secure_boot": _SECURE_BOOT[answer]})]


def tpm_rows(records: list[Record]) -> list[Row]:
    """The TPM's row, or none when Windows reports no TPM present."""
    rows = []
    for record in records:
        if record.get("TpmPresent") is False:
            continue
        values = {
            "activated": flag(record.get("TpmActivated")),
            "enabled": flag(record.get("TpmEnabled")),
            "owned": flag(record.get("TpmOwned")),
            "manufacturer_version": text(record.get("ManufacturerVersion")),
            "manufacturer_id": integer(record.get("ManufacturerId")),
            "manufacturer_name": text(record.get("ManufacturerIdTxt")),
            "product_name": text(record.get("ManufacturerVersionInfo")),
            "physical_presence_version": text(record.get("PhysicalPresenceVersionInfo")),
            "spec_version": text(record.get("SpecVersion")),
        }
        rows.append(make_row("tpm_info", values))
    return rows


def collect_secureboot(runner: Runner, timeout: float) -> list[Row]:
    return secureboot_rows(runner.run(SECUREBOOT_COMMAND, timeout=timeout))


def collect_tpm_info(runner: Runner, timeout: float) -> list[Row]:
    return tpm_rows(run_json(runner, TPM_COMMAND, "tpm_info", timeout))
