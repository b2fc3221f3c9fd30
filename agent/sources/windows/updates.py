"""``patches`` and ``windows_update_history``: what Windows has installed, and when.

``patches`` comes from ``Get-HotFix`` (the ``Win32_QuickFixEngineering`` class osquery
reads). ``installed_on`` is written ``M/d/yyyy`` in the invariant culture, the form the
class itself stores and osquery passes on; the script formats it so that a laptop's
display language and time zone cannot change the date. Hotfixes list only what
Component-Based Servicing installed: Windows 10/11 cumulative updates appear, but
Microsoft Store and Defender signature updates do not.

``windows_update_history`` comes from the Windows Update Agent's COM API
(``Microsoft.Update.Session``, ``QueryHistory``), as osquery's does. Its enums are decoded
into osquery's names:

===============  =====================================================================
column           values
===============  =====================================================================
operation        1 Installation, 2 Uninstallation
result_code      0 NotStarted, 1 InProgress, 2 Succeeded, 3 SucceededWithErrors,
                 4 Failed, 5 Aborted
server_selection 0 Default, 1 ManagedServer, 2 WindowsUpdate, 3 Others
date             the event's time as Unix seconds (the API reports UTC)
===============  =====================================================================

"Patched within 30 days" reads the newest ``date`` with ``result_code = 'Succeeded'``.
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import Row
from agent.sources.windows.common import (
    Record,
    integer,
    make_row,
    powershell_json,
    run_json,
    text,
    unix_time,
)

__all__ = [
    "HISTORY_COMMAND",
    "HOTFIX_COMMAND",
    "collect_patches",
    "collect_update_history",
    "patch_rows",
    "update_history_rows",
]

PATCHES = "patches"
HISTORY = "windows_update_history"

HOTFIX_COMMAND = powershell_json(
    "Get-HotFix | Select-Object CSName, HotFixID, Caption, Description, FixComments, "
    "InstalledBy, InstallDate, @{ Name = 'InstalledOn'; Expression = { if ($_.InstalledOn) "
    "{ $_.InstalledOn.ToString('M/d/yyyy', [Globalization.CultureInfo]::InvariantCulture) } } }"
)

HISTORY_COMMAND = powershell_json(
    "$searcher = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher(); "
    "$count = $searcher.GetTotalHistoryCount(); "
    "if ($count -gt 0) { $searcher.QueryHistory(0, $count) | ForEach-Object { "
    "[pscustomobject]@{ ClientApplicationID = $_.ClientApplicationID; Date = $_.Date; "
    "Description = $_.Description; HResult = $_.HResult; Operation = $_.Operation; "
    "ResultCode = $_.ResultCode; ServerSelection = $_.ServerSelection; "
    "ServiceID = $_.ServiceID; SupportUrl = $_.SupportUrl; Title = $_.Title; "
    "UpdateID = $_.UpdateIdentity.UpdateID; RevisionNumber = $_.UpdateIdentity.RevisionNumber "
    "} } }"
)

_OPERATIONS = {1: "Installation", 2: "Uninstallation"}
_RESULTS = {
    0: "NotStarted",
    1: "InProgress",
    2: "Succeeded",
    3: "SucceededWithErrors",
    4: "Failed",
    5: "Aborted",
}
_SERVERS = {0: "Default", 1: "ManagedServer", 2: "WindowsUpdate", 3: "Others"}


def patch_rows(records: list[Record]) -> list[Row]:
    """One row per hotfix (Get-HotFix objects, or Get-ComputerInfo's OsHotFixes)."""
    return [
        make_row(
            PATCHES,
            {
                "csname": text(record.get("CSName")),
                "hotfix_id": text(record.get("HotFixID")),
                "caption": text(record.get("Caption")),
                "description": text(record.get("Description")),
                "fix_comments": text(record.get("FixComments")),
                "installed_by": text(record.get("InstalledBy")),
                "install_date": text(record.get("InstallDate")),
                "installed_on": text(record.get("InstalledOn")),
            },
        )
        for record in records
    ]


def _decode(names: dict[int, str], value: object) -> str:
    number = integer(value)
    return names.get(int(number), number) if number else ""


def update_history_rows(records: list[Record]) -> list[Row]:
    """One row per Windows Update history entry (decodings in the module docstring)."""
    return [
        make_row(
            HISTORY,
            {
                "client_app_id": text(record.get("ClientApplicationID")),
                "date": unix_time(record.get("Date")),
                "description": text(record.get("Description")),
                "hresult": integer(record.get("HResult")),
                "operation": _decode(_OPERATIONS, record.get("Operation")),
                "result_code": _decode(_RESULTS, record.get("ResultCode")),
                "server_selection": _decode(_SERVERS, record.get("ServerSelection")),
                "service_id": text(record.get("ServiceID")),
                "support_url": text(record.get("SupportUrl")),
                "title": text(record.get("Title")),
                "update_id": text(record.get("UpdateID")),
                "update_revision": integer(record.get("RevisionNumber")),
            },
        )
        for record in records
    ]


def collect_patches(runner: Runner, timeout: float) -> list[Row]:
    return patch_rows(run_json(runner, HOTFIX_COMMAND, PATCHES, timeout))


def collect_update_history(runner: Runner, timeout: float) -> list[Row]:
    return update_history_rows(run_json(runner, HISTORY_COMMAND, HISTORY, timeout))
