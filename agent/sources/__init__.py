"""The registry of fact sources: one explicit, ordered list.

Order is preference: osquery first (when its socket answers, its rows are what Fleet's
queries were written against), then this platform's native probes, which need nothing
installed. A table the first source cannot produce (an osquery table missing from this
osqueryd, or one of Posture's own tables) falls to the native source. A few osquery tables
are known to be wrong on some platform; there the native source is asked first
(``NATIVE_FIRST``).
"""

from __future__ import annotations

import sys

from agent.sources.base import FactSource, ProbeError, Row, TableRequest

__all__ = [
    "NATIVE_FIRST",
    "FactSource",
    "ProbeError",
    "Row",
    "TableRequest",
    "default_sources",
    "platform",
]

#: Tables osquery gets wrong per platform: osquery's gatekeeper table reads a database
#: macOS 15 no longer updates and reports Gatekeeper on when it is off (osquery #8528).
NATIVE_FIRST: dict[str, frozenset[str]] = {"darwin": frozenset({"gatekeeper"})}


class _Without:
    """A source that no longer claims ``excluded`` tables (so the next source gets them)."""

    def __init__(self, source: FactSource, excluded: frozenset[str]) -> None:
        self._source = source
        self._excluded = excluded
        self.name = source.name

    def available(self) -> bool:
        return self._source.available()

    def tables(self) -> frozenset[str]:
        return self._source.tables() - self._excluded

    def collect(self, request: TableRequest) -> list[Row]:
        return self._source.collect(request)


def platform() -> str:
    """This machine's platform as osquery names it: linux, darwin or windows."""
    return "windows" if sys.platform.startswith("win") else sys.platform


def default_sources(osquery_socket: str | None = None) -> list[FactSource]:
    from agent.sources.osquery import OsquerySource

    current = platform()
    osquery: FactSource = OsquerySource(osquery_socket)
    if current in NATIVE_FIRST:
        osquery = _Without(osquery, NATIVE_FIRST[current])
    sources: list[FactSource] = [osquery]
    if current == "linux":
        from agent.sources.linux import LinuxNativeSource

        sources.append(LinuxNativeSource())
    elif current == "darwin":
        from agent.sources.macos import MacosNativeSource

        sources.append(MacosNativeSource())
    elif current == "windows":
        from agent.sources.windows import WindowsNativeSource

        sources.append(WindowsNativeSource())
    return sources
