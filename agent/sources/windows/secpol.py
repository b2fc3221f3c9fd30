"""``security_profile_info``: password, lockout and audit policy from ``secedit /export``.

osquery reads the same settings through an undocumented export of scecli.dll; the
documented way is ``secedit /export /mergedpolicy /areas SECURITYPOLICY``, which writes the
policy in force (local settings merged with Group Policy) to an INI-like file. The file's
section and key names are fixed identifiers, never translated, and its values numbers or
quoted names, so it is safe to parse. secedit needs administrator rights; without them
the table carries secedit's error.

Columns map to keys of ``[System Access]`` and ``[Event Audit]``:

==============================  ==============================  ==========================
column                          key                             values
==============================  ==============================  ==========================
minimum_password_age            MinimumPasswordAge              days
maximum_password_age            MaximumPasswordAge              days; -1 never expires
minimum_password_length         MinimumPasswordLength           characters
password_complexity             PasswordComplexity              1 on, 0 off
password_history_size           PasswordHistorySize             remembered passwords
lockout_bad_count               LockoutBadCount                 attempts; 0 never locks
logon_to_change_password        RequireLogonToChangePassword    1/0
force_logoff_when_expire        ForceLogoffWhenHourExpire       1/0
new_administrator_name          NewAdministratorName            name (quotes removed)
new_guest_name                  NewGuestName                    name (quotes removed)
clear_text_password             ClearTextPassword               1 reversible encryption
lsa_anonymous_name_lookup       LSAAnonymousNameLookup          1/0
enable_admin_account            EnableAdminAccount              1/0
enable_guest_account            EnableGuestAccount              1/0
audit_system_events ...         AuditSystemEvents ...           0 none, 1 success,
                                                                2 failure, 3 both
==============================  ==============================  ==========================

A key the export leaves out (a policy never defined) gives "".
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import make_row, powershell

__all__ = ["COMMAND", "collect_security_profile", "parse_secedit", "security_profile_rows"]

TABLE = "security_profile_info"

COMMAND = powershell(
    "$file = [System.IO.Path]::GetTempFileName(); "
    "try { $out = secedit.exe /export /mergedpolicy /cfg $file /areas SECURITYPOLICY /quiet; "
    "if ($LASTEXITCODE -ne 0) { throw ('secedit /export failed: ' + ($out -join ' ')) }; "
    "Get-Content -LiteralPath $file -Raw -Encoding Unicode } "
    "finally { Remove-Item -LiteralPath $file -ErrorAction SilentlyContinue }"
)

_KEYS = {
    "minimum_password_age": "MinimumPasswordAge",
    "maximum_password_age": "MaximumPasswordAge",
    "minimum_password_length": "MinimumPasswordLength",
    "password_complexity": "PasswordComplexity",
    "password_history_size": "PasswordHistorySize",
    "lockout_bad_count": "LockoutBadCount",
    "logon_to_change_password": "RequireLogonToChangePassword",
    "force_logoff_when_expire": "ForceLogoffWhenHourExpire",
    "new_administrator_name": "NewAdministratorName",
    "new_guest_name": "NewGuestName",
    "clear_text_password": "ClearTextPassword",
    "lsa_anonymous_name_lookup": "LSAAnonymousNameLookup",
    "enable_admin_account": "EnableAdminAccount",
    "enable_guest_account": "EnableGuestAccount",
    "audit_system_events": "AuditSystemEvents",
    "audit_logon_events": "AuditLogonEvents",
    "audit_object_access": "AuditObjectAccess",
    "audit_privilege_use": "AuditPrivilegeUse",
    "audit_policy_change": "AuditPolicyChange",
    "audit_account_manage": "AuditAccountManage",
    "audit_process_tracking": "AuditProcessTracking",
    "audit_ds_access": "AuditDSAccess",
    "audit_account_logon": "AuditAccountLogon",
}
_SECTIONS = ("System Access", "Event Audit")


def parse_secedit(export: str) -> dict[str, dict[str, str]]:
    """The export's sections as ``{section: {key: value}}``, values unquoted.

    ``[Registry Values]`` lines have no spaces around "=" and keys that are registry
    paths; they parse the same way and are simply not used here.
    """
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in export.lstrip("\ufeff").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip().removeprefix('"').removesuffix('"')
    return sections


def security_profile_rows(export: str) -> list[Row]:
    """The one row of security_profile_info (ProbeError if the export has no policy)."""
    sections = parse_secedit(export)
    if not any(section in sections for section in _SECTIONS):
        raise ProbeError(f"{TABLE}: secedit's export has no [System Access] or [Event Audit]")
    settings = {key: value for name in _SECTIONS for key, value in sections.get(name, {}).items()}
    return [make_row(TABLE, {column: settings.get(key, "") for column, key in _KEYS.items()})]


def collect_security_profile(runner: Runner, timeout: float) -> list[Row]:
    return security_profile_rows(runner.run(COMMAND, timeout=timeout))
