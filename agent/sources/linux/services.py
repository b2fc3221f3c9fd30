"""``systemd_units``: the units systemd has loaded, with their runtime and enablement state.

Two systemctl calls through the runner, both cheap single D-Bus/disk passes:
``list-units --all`` (every loaded unit, active or not; the same set osquery's D-Bus
``ListUnits`` returns) and ``list-unit-files`` (whether each unit file is enabled, disabled,
static or masked). Both are asked for JSON, which systemctl's table printer emits in
current releases (seen with ``list-unit-files`` on Debian 12's systemd 252; ``list-units``
shares the printer, with keys unit, load, active, sub, job, description). Older releases
ignore ``--output=json`` for these verbs and print the ``--plain --no-legend`` table, which
is parsed instead.

Not filled: ``following``, ``fragment_path``, ``source_path`` and ``user``, which osquery gets
with three D-Bus property reads per unit (about a thousand round trips on a desktop, far
beyond this agent's CPU budget). ``object_path`` is derived from the unit name exactly as
systemd builds it. ``job_id`` is "0" and ``job_path`` "/" when no job is pending, as osquery
reports; for a pending job only its type is known.

When systemd is not the init system (containers, WSL), the table is an error, never empty:
"no services" would pass a check such as "telnet is not running" for the wrong reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.linux.common import make_row

__all__ = [
    "SYSTEMD_RUNTIME_DIR",
    "collect_systemd_units",
    "object_path",
    "parse_list_unit_files",
    "parse_list_units",
    "unit_rows",
]

SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")

_COMMON = ["--all", "--full", "--plain", "--no-legend", "--no-pager", "--output=json"]
LIST_UNITS = ["systemctl", "list-units", *_COMMON]
LIST_UNIT_FILES = ["systemctl", "list-unit-files", *_COMMON]

#: Job types systemctl can show in its JOB column (to tell a job from a description word).
_JOB_TYPES = frozenset(
    {"start", "stop", "reload", "restart", "try-restart", "reload-or-start", "verify-active", "nop"}
)


def _load_json(text: str) -> list[dict[str, Any]] | None:
    """The JSON array systemctl printed, or None when it printed its plain table instead."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProbeError(f"systemd_units: systemctl printed malformed JSON: {error}") from None
    if not isinstance(value, list):
        raise ProbeError("systemd_units: systemctl printed JSON that is not a list")
    return [item for item in value if isinstance(item, dict)]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_list_units(text: str) -> list[dict[str, str]]:
    """Units from ``systemctl list-units``: unit, load, active, sub, job, description."""
    keys = ("unit", "load", "active", "sub", "job", "description")
    items = _load_json(text)
    if items is not None:
        return [{key: _text(item.get(key)) for key in keys} for item in items if item.get("unit")]
    units = []
    for line in text.splitlines():
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        rest = fields[4] if len(fields) == 5 else ""
        job, _, description = rest.partition(" ")
        if job not in _JOB_TYPES or not description:
            job, description = "", rest
        units.append(dict(zip(keys, [*fields[:4], job, description.strip()], strict=True)))
    return units


def parse_list_unit_files(text: str) -> dict[str, str]:
    """Unit file name -> state (enabled, disabled, static, masked...)."""
    items = _load_json(text)
    if items is not None:
        return {_text(item.get("unit_file")): _text(item.get("state")) for item in items}
    states = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            states[fields[0]] = fields[1]
    return states


def object_path(unit_id: str) -> str:
    """systemd's D-Bus object path for a unit (bus_label_escape: "_2e" for ".", ...)."""
    escaped = []
    for index, char in enumerate(unit_id):
        keep = char.isascii() and (char.isalpha() or (index > 0 and char.isdigit()))
        escaped.append(char if keep else "".join(f"_{byte:02x}" for byte in char.encode()))
    return "/org/freedesktop/systemd1/unit/" + ("".join(escaped) or "_")


def _unit_file_state(unit_id: str, states: dict[str, str]) -> str:
    """The unit file's state; an instance (getty@tty1.service) falls back to its template."""
    if unit_id in states:
        return states[unit_id]
    prefix, at, rest = unit_id.partition("@")
    if at:
        return states.get(f"{prefix}@.{rest.rpartition('.')[2]}", "")
    return ""


def unit_rows(units: list[dict[str, str]], states: dict[str, str]) -> list[Row]:
    rows = []
    for unit in units:
        job = unit["job"]
        values = {
            "id": unit["unit"],
            "description": unit["description"],
            "load_state": unit["load"],
            "active_state": unit["active"],
            "sub_state": unit["sub"],
            "unit_file_state": _unit_file_state(unit["unit"], states),
            "object_path": object_path(unit["unit"]),
            "job_id": "" if job else "0",
            "job_type": job,
            "job_path": "" if job else "/",
        }
        rows.append(make_row("systemd_units", values))
    return rows


def collect_systemd_units(runner: Runner, runtime_dir: Path = SYSTEMD_RUNTIME_DIR) -> list[Row]:
    if not runtime_dir.is_dir():
        raise ProbeError(
            f"systemd is not running on this host ({runtime_dir} is absent), "
            "so the state of its services cannot be read"
        )
    units = parse_list_units(runner.run(LIST_UNITS, timeout=20.0))
    states = parse_list_unit_files(runner.run(LIST_UNIT_FILES, timeout=20.0))
    return unit_rows(units, states)
