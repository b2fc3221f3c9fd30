"""``os_version``: the macOS release, from ``sw_vers``.

``sw_vers`` prints ``ProductName:``, ``ProductVersion:``, ``BuildVersion:`` and, for a
Rapid Security Response, ``ProductVersionExtra:`` lines, separated from their values by
tabs. ``version`` is ProductVersion ("14.5"), split into ``major``/``minor``/``patch``
(a missing part is 0, as osquery reports "14.5" as 14/5/0); ``build`` the build
("23F79"); ``extra`` the RSR letter ("(a)"); ``codename`` the release's marketing name
("Sonoma"), from the major version; ``arch`` the machine ("arm64", "x86_64").
"""

from __future__ import annotations

import re

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.macos.common import make_row

__all__ = ["SW_VERS_COMMAND", "collect_os_version", "os_version_rows", "parse_sw_vers"]

SW_VERS_COMMAND = ("/usr/bin/sw_vers",)

_CODENAMES = {
    "11": "Big Sur",
    "12": "Monterey",
    "13": "Ventura",
    "14": "Sonoma",
    "15": "Sequoia",
    "26": "Tahoe",
}
_LINE = re.compile(r"^(\w+):\s*(.*?)\s*$")


def parse_sw_vers(output: str) -> dict[str, str]:
    return {match[1]: match[2] for match in map(_LINE.match, output.splitlines()) if match}


def os_version_rows(output: str, machine: str) -> list[Row]:
    fields = parse_sw_vers(output)
    version = fields.get("ProductVersion", "")
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ProbeError(f"os_version: sw_vers printed no ProductVersion: {output.strip()[:80]!r}")
    major, minor, patch = [*version.split("."), "0", "0"][:3]
    values = {
        "name": fields.get("ProductName", ""),
        "version": version,
        "major": major,
        "minor": minor,
        "patch": patch,
        "build": fields.get("BuildVersion", ""),
        "platform": "darwin",
        "platform_like": "darwin",
        "codename": _CODENAMES.get(major, ""),
        "arch": machine,
        "extra": fields.get("ProductVersionExtra", ""),
    }
    return [make_row("os_version", values)]


def collect_os_version(runner: Runner, timeout: float, machine: str) -> list[Row]:
    return os_version_rows(runner.run(SW_VERS_COMMAND, timeout=timeout), machine)
