"""``managed_policies`` and ``macos_screenlock_policy``: settings read from plist files.

``managed_policies`` lists what configuration profiles set, as osquery does: every
top-level key of every plist in ``/Library/Managed Preferences`` (device profiles;
``username`` "") and its per-user folders (user profiles; ``username`` the folder's
name). ``domain`` is the file's name without ``.plist``; booleans are written 1/0, numbers
and strings as they are, dates as Unix seconds, arrays and dictionaries as compact JSON.
``uuid`` and ``manual`` are not in these files and are "".

``macos_screenlock_policy`` answers "does the screen lock, and when" as root, which
osquery's ``screenlock`` cannot (it asks the logged-in user's session and returns nothing
to a daemon). It reads the ``com.apple.screensaver`` keys ``idleTime`` (seconds before the
screen saver starts; 0 never), ``askForPassword`` (1 to require the password) and
``askForPasswordDelay`` (seconds of grace) from three places, one row per place that sets
any of them:

==============  =====================================================================
scope           file
==============  =====================================================================
computer        /Library/Managed Preferences/com.apple.screensaver.plist
user            /Library/Managed Preferences/<user>/com.apple.screensaver.plist
user_setting    /Users/<user>/Library/Preferences/ByHost/com.apple.screensaver.*.plist
==============  =====================================================================

Limits, for auditors: since macOS 10.13 ``askForPassword`` is honoured only from a
profile, so the user_setting scope carries ``idle_time`` alone in practice; the
display-sleep timer (``pmset``), which also locks the screen when a password is required,
is not read; and a user's own settings are only seen once macOS has written them to disk.
A Mac with no row sets nothing, and a policy requiring a lock within N minutes fails on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.sources.base import Row
from agent.sources.macos.common import flag, make_row, read_plist, unix_time

__all__ = ["MANAGED", "collect_managed_policies", "collect_screenlock_policy", "plist_value"]

MANAGED = Path("Library/Managed Preferences")
SCREENSAVER = "com.apple.screensaver"
_SCREEN_KEYS = {
    "idleTime": "idle_time",
    "askForPassword": "ask_for_password",
    "askForPasswordDelay": "ask_for_password_delay",
}


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return unix_time(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def plist_value(value: object) -> str:
    """A plist value as managed_policies writes it (see the module docstring)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, datetime):
        return unix_time(value)
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _profile_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(username, plist) for every device ("" user) and user profile plist."""
    folder = root / MANAGED
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            yield from ((entry.name, plist) for plist in sorted(entry.glob("*.plist")))
        elif entry.suffix == ".plist":
            yield "", entry


def collect_managed_policies(root: Path) -> list[Row]:
    rows = []
    for username, path in _profile_files(root):
        settings = read_plist(path, "managed_policies") or {}
        for name, value in settings.items():
            values = {
                "domain": path.stem,
                "name": str(name),
                "value": plist_value(value),
                "username": username,
            }
            rows.append(make_row("managed_policies", values))
    return rows


def _number(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return ""


def _screenlock_row(scope: str, username: str, path: Path, settings: dict[str, Any]) -> Row:
    return make_row(
        "macos_screenlock_policy",
        {
            "scope": scope,
            "username": username,
            "idle_time": _number(settings.get("idleTime")),
            "ask_for_password": flag(settings.get("askForPassword"))
            or _number(settings.get("askForPassword")),
            "ask_for_password_delay": _number(settings.get("askForPasswordDelay")),
            "source_path": str(path),
        },
    )


def _screensaver_files(root: Path) -> Iterator[tuple[str, str, Path]]:
    """(scope, username, plist) for each place screen saver settings can live."""
    for username, path in _profile_files(root):
        if path.stem == SCREENSAVER:
            yield ("user" if username else "computer"), username, path
    users = root / "Users"
    if users.is_dir():
        for home in sorted(users.iterdir()):
            byhost = home / "Library/Preferences/ByHost"
            for path in sorted(byhost.glob(f"{SCREENSAVER}.*.plist")):
                yield "user_setting", home.name, path


def collect_screenlock_policy(root: Path) -> list[Row]:
    rows = []
    for scope, username, path in _screensaver_files(root):
        settings = read_plist(path, "macos_screenlock_policy") or {}
        if any(key in settings for key in _SCREEN_KEYS):
            rows.append(_screenlock_row(scope, username, path, settings))
    return rows
