"""The registry of fact sources: one explicit, ordered list.

Order is preference: osquery first (when its socket answers, its rows are what Fleet's
queries were written against), then the native probes, which need nothing installed.
"""

from __future__ import annotations

import sys

from agent.sources.base import FactSource, ProbeError, Row, TableRequest

__all__ = ["FactSource", "ProbeError", "Row", "TableRequest", "default_sources", "platform"]


def platform() -> str:
    """This machine's platform as osquery names it: linux, darwin or windows."""
    return "windows" if sys.platform.startswith("win") else sys.platform


def default_sources(osquery_socket: str | None = None) -> list[FactSource]:
    from agent.sources.osquery import OsquerySource

    sources: list[FactSource] = [OsquerySource(osquery_socket)]
    if platform() == "linux":
        from agent.sources.linux import LinuxNativeSource

        sources.append(LinuxNativeSource())
    return sources
