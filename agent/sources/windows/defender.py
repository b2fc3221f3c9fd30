"""``windows_defender_status``: Microsoft Defender Antivirus engines and signature age.

``windows_security_products`` says whether an antivirus is on and whether Windows thinks
its signatures are current, but not how old they are; a policy like "signatures no older
than 7 days" needs ``Get-MpComputerStatus``. Its properties map one to one:

==================================  ================================  =====================
Get-MpComputerStatus property       column                            decoding
==================================  ================================  =====================
AntivirusEnabled ...                antivirus_enabled ...             true/false -> 1/0
IsTamperProtected                   tamper_protected                  true/false -> 1/0
AMRunningMode                       am_running_mode                   as is ("Normal",
                                                                      "Passive Mode",
                                                                      "EDR Block Mode")
AntivirusSignatureVersion           signature_version                 as is
AntivirusSignatureAge               signature_age_days                days; 4294967295
                                                                      (never) -> ""
AntivirusSignatureLastUpdated       signature_last_updated            Unix time (UTC)
DefenderSignaturesOutOfDate         signatures_out_of_date            true/false -> 1/0
QuickScanAge, FullScanAge           quick/full_scan_age_days          as signature age
==================================  ================================  =====================

Older Defender releases lack some properties (IsTamperProtected, AMRunningMode,
DefenderSignaturesOutOfDate): their columns are "". Where Defender is not installed or is
switched off for another antivirus, the cmdlet fails and the table carries that error;
policies that accept any antivirus read ``windows_security_products`` instead.
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import (
    Record,
    flag,
    integer,
    make_row,
    powershell_json,
    run_json,
    text,
    unix_time,
)

__all__ = ["COMMAND", "collect_defender_status", "defender_rows"]

TABLE = "windows_defender_status"

#: The DWORD Defender reports as an age when the event never happened.
_NEVER = "4294967295"

_FLAGS = {
    "AntivirusEnabled": "antivirus_enabled",
    "AntispywareEnabled": "antispyware_enabled",
    "RealTimeProtectionEnabled": "real_time_protection_enabled",
    "BehaviorMonitorEnabled": "behavior_monitor_enabled",
    "IoavProtectionEnabled": "ioav_protection_enabled",
    "OnAccessProtectionEnabled": "on_access_protection_enabled",
    "AMServiceEnabled": "am_service_enabled",
    "IsTamperProtected": "tamper_protected",
    "DefenderSignaturesOutOfDate": "signatures_out_of_date",
}
_TEXTS = {
    "AMRunningMode": "am_running_mode",
    "AMProductVersion": "am_product_version",
    "AMEngineVersion": "am_engine_version",
    "AntivirusSignatureVersion": "signature_version",
}
_AGES = {
    "AntivirusSignatureAge": "signature_age_days",
    "QuickScanAge": "quick_scan_age_days",
    "FullScanAge": "full_scan_age_days",
}

COMMAND = powershell_json(
    "Get-MpComputerStatus | Select-Object "
    + ", ".join([*_FLAGS, *_TEXTS, *_AGES, "AntivirusSignatureLastUpdated"])
)


def _age(value: object) -> str:
    days = integer(value)
    return "" if days == _NEVER else days


def defender_rows(records: list[Record]) -> list[Row]:
    """The one status row (ProbeError unless PowerShell printed exactly one status)."""
    if len(records) != 1:
        raise ProbeError(
            f"{TABLE}: expected one status from Get-MpComputerStatus, got {len(records)}"
        )
    record = records[0]
    values = {column: flag(record.get(name)) for name, column in _FLAGS.items()}
    values |= {column: text(record.get(name)) for name, column in _TEXTS.items()}
    values |= {column: _age(record.get(name)) for name, column in _AGES.items()}
    values["signature_last_updated"] = unix_time(record.get("AntivirusSignatureLastUpdated"))
    return [make_row(TABLE, values)]


def collect_defender_status(runner: Runner, timeout: float) -> list[Row]:
    return defender_rows(run_json(runner, COMMAND, TABLE, timeout))
