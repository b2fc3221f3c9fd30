"""``software_update`` and ``software_update_available``: macOS update settings and the
updates waiting to be installed.

``software_update`` reads the ``com.apple.SoftwareUpdate`` preferences through
``defaults export /Library/Preferences/com.apple.SoftwareUpdate -`` (an XML plist on
stdout, read through cfprefsd so it is current), and the configuration profile's copy in
``/Library/Managed Preferences/com.apple.SoftwareUpdate.plist``, whose values win, as
they do on the Mac. Keys -> columns:

==================================  ====================================  ================
key                                 column                                values
==================================  ====================================  ================
AutomaticCheckEnabled               automatic_check_enabled               1/0, "" unset
AutomaticDownload                   automatic_download                    1/0, "" unset
AutomaticallyInstallMacOSUpdates    automatically_install_macos_updates   1/0, "" unset
AutomaticallyInstallAppUpdates      automatically_install_app_updates     1/0, "" unset
CriticalUpdateInstall               critical_update_install               1/0, "" unset
ConfigDataInstall                   config_data_install                   1/0, "" unset
LastSuccessfulDate                  last_successful_check                 Unix seconds
==================================  ====================================  ================

An unset key means macOS applies its built-in default; CIS benchmarks require the
settings to be set explicitly, so "" does not compare equal to 1. ``managed`` is 1 when
the profile sets any of them. (The App Store's own ``com.apple.commerce AutoUpdate``
switch, used before macOS 13, is not read.)

``software_update_available`` parses ``softwareupdate --list --no-scan``: the updates
found by the last scan macOS ran itself, without contacting Apple (a scan can take minutes
and fails offline). One row per ``* Label:`` entry; ``Recommended: YES`` -> 1 and
``Action: restart`` -> ``restart_required`` 1. "No new software available." is no rows; a
"Scan finished with error" or any other output is a ProbeError.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.macos.common import flag, load_plist, make_row, parse_plist, unix_time

__all__ = [
    "DEFAULTS_COMMAND",
    "LIST_COMMAND",
    "LIST_TIMEOUT",
    "available_update_rows",
    "collect_available_updates",
    "collect_software_update",
    "software_update_rows",
]

SETTINGS = "software_update"
AVAILABLE = "software_update_available"
DEFAULTS_COMMAND = (
    "/usr/bin/defaults",
    "export",
    "/Library/Preferences/com.apple.SoftwareUpdate",
    "-",
)
LIST_COMMAND = ("/usr/sbin/softwareupdate", "--list", "--no-scan")
#: softwareupdate talks to a daemon that may be busy installing: give it longer.
LIST_TIMEOUT = 120.0
MANAGED = Path("Library/Managed Preferences/com.apple.SoftwareUpdate.plist")

_KEYS = {
    "AutomaticCheckEnabled": "automatic_check_enabled",
    "AutomaticDownload": "automatic_download",
    "AutomaticallyInstallMacOSUpdates": "automatically_install_macos_updates",
    "AutomaticallyInstallAppUpdates": "automatically_install_app_updates",
    "CriticalUpdateInstall": "critical_update_install",
    "ConfigDataInstall": "config_data_install",
}
_LABEL = re.compile(r"^\* Label: (.+?)\s*$")
_DETAILS = re.compile(
    r"^\s*Title: (?P<title>.*?), Version: (?P<version>.*?), Size: (?P<size>.*?), "
    r"Recommended: (?P<recommended>YES|NO),(?: Action: (?P<action>\w+),)?\s*$"
)


def software_update_rows(local: dict[str, Any], managed: dict[str, Any]) -> list[Row]:
    """The one settings row: managed values win over local ones."""
    merged = local | managed
    values = {column: flag(merged.get(key)) for key, column in _KEYS.items()}
    values["last_successful_check"] = unix_time(merged.get("LastSuccessfulDate"))
    values["managed"] = "1" if any(key in managed for key in _KEYS) else "0"
    return [make_row(SETTINGS, values)]


def available_update_rows(output: str) -> list[Row]:
    if "Scan finished with error" in output:
        raise ProbeError(f"{AVAILABLE}: softwareupdate: {output.strip().splitlines()[-1][:200]}")
    if "No new software available." in output:
        return []
    if "found the following new or updated software" not in output:
        raise ProbeError(f"{AVAILABLE}: unexpected softwareupdate output {output.strip()[:80]!r}")
    rows: list[Row] = []
    lines = output.splitlines()
    for index, line in enumerate(lines):
        label = _LABEL.match(line)
        if label is None:
            continue
        details = _DETAILS.match(lines[index + 1]) if index + 1 < len(lines) else None
        if details is None:
            raise ProbeError(f"{AVAILABLE}: no details line after the label {label[1]!r}")
        action = details["action"] or ""
        values = {
            "label": label[1],
            "title": details["title"],
            "version": details["version"],
            "size": details["size"],
            "recommended": "1" if details["recommended"] == "YES" else "0",
            "action": action,
            "restart_required": "1" if action == "restart" else "0",
        }
        rows.append(make_row(AVAILABLE, values))
    return rows


def collect_software_update(runner: Runner, timeout: float, root: Path) -> list[Row]:
    local = parse_plist(runner.run(DEFAULTS_COMMAND, timeout=timeout), SETTINGS)
    return software_update_rows(local, load_plist(root / MANAGED, SETTINGS))


def collect_available_updates(runner: Runner) -> list[Row]:
    return available_update_rows(runner.run(LIST_COMMAND, timeout=LIST_TIMEOUT, with_stderr=True))
