"""``windows_firewall_profiles``: the Domain, Private and Public firewall profiles in force.

Read with ``Get-NetFirewallProfile -PolicyStore ActiveStore``: the active store is what
the firewall enforces, local settings merged with Group Policy. Without it the cmdlet
shows the local (persistent) store only, where a profile Group Policy switches on or off
reads "NotConfigured" and the answer would be wrong in exactly the managed fleet that
policies are written for.

ConvertTo-Json writes the NetSecurity enums as numbers; PowerShell 7 with
``-EnumsAsStrings`` (or a CIM serialiser) writes their names. Both decode the same:

============================  ======  =====================  ==========================
property                      number  name                   column value
============================  ======  =====================  ==========================
Enabled and other GpoBoolean  0       False                  0
                              1       True                   1
                              2       NotConfigured          "" (the Windows default
                                                             applies; unknown to us)
DefaultInbound/OutboundAction 0       NotConfigured          NotConfigured
                              2       Allow                  Allow
                              4       Block                  Block
============================  ======  =====================  ==========================
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import (
    Record,
    integer,
    make_row,
    powershell_json,
    run_json,
    text,
)

__all__ = ["COMMAND", "collect_firewall_profiles", "firewall_profile_rows"]

TABLE = "windows_firewall_profiles"

#: GpoBoolean properties -> column (``enabled`` is one of them).
_BOOLEANS = {
    "Enabled": "enabled",
    "AllowInboundRules": "allow_inbound_rules",
    "AllowLocalFirewallRules": "allow_local_firewall_rules",
    "AllowLocalIPsecRules": "allow_local_ipsec_rules",
    "AllowUserApps": "allow_user_apps",
    "AllowUserPorts": "allow_user_ports",
    "AllowUnicastResponseToMulticast": "allow_unicast_response_to_multicast",
    "NotifyOnListen": "notify_on_listen",
    "EnableStealthModeForIPsec": "enable_stealth_mode_for_ipsec",
    "LogAllowed": "log_allowed",
    "LogBlocked": "log_blocked",
    "LogIgnored": "log_ignored",
}
_ACTIONS = {
    "DefaultInboundAction": "default_inbound_action",
    "DefaultOutboundAction": "default_outbound_action",
}

_GPO_BOOLEAN = {0: "0", 1: "1", 2: "", "False": "0", "True": "1", "NotConfigured": ""}
_ACTION = {0: "NotConfigured", 2: "Allow", 4: "Block"}

COMMAND = powershell_json(
    "Get-NetFirewallProfile -PolicyStore ActiveStore | Select-Object Name, "
    + ", ".join([*_BOOLEANS, *_ACTIONS, "LogFileName", "LogMaxSizeKilobytes"])
)


def _gpo_boolean(record: Record, name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | str) and value in _GPO_BOOLEAN:
        return _GPO_BOOLEAN[value]
    raise ProbeError(f"{TABLE}: unexpected {name} value {value!r}")


def _action(record: Record, name: str) -> str:
    value = record.get(name)
    if isinstance(value, str) and value in _ACTION.values():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in _ACTION:
        return _ACTION[value]
    if value is None:
        return ""
    raise ProbeError(f"{TABLE}: unexpected {name} value {value!r}")


def firewall_profile_rows(records: list[Record]) -> list[Row]:
    """One row per profile; an enum value outside the documented ones is a ProbeError."""
    rows = []
    for record in records:
        values = {"profile_name": text(record.get("Name") or record.get("Profile"))}
        values |= {column: _gpo_boolean(record, name) for name, column in _BOOLEANS.items()}
        values |= {column: _action(record, name) for name, column in _ACTIONS.items()}
        values["log_file_name"] = text(record.get("LogFileName"))
        values["log_max_size_kilobytes"] = integer(record.get("LogMaxSizeKilobytes"))
        rows.append(make_row(TABLE, values))
    return rows


def collect_firewall_profiles(runner: Runner, timeout: float) -> list[Row]:
    rows = firewall_profile_rows(run_json(runner, COMMAND, TABLE, timeout))
    if not rows:
        raise ProbeError(f"{TABLE}: Get-NetFirewallProfile returned no profiles")
    return rows
