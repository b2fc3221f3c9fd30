"""The agent as a system service: systemd on Linux, launchd on macOS, the SCM on Windows.

Each platform's definition is rendered from one ``AgentService`` description
(``agent.service.model``); ``render_definition`` picks the renderer. The Windows service
host, ``agent.service.winservice``, is imported only on Windows and never from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from agent.service.model import SYSTEMD_UNIT, AgentService, ServiceError, agent_service

__all__ = ["AgentService", "Definition", "ServiceError", "agent_service", "render_definition"]


@dataclass(frozen=True)
class Definition:
    """A service definition's text, and the steps that put it to work."""

    text: str
    steps: tuple[str, ...]


def render_definition(
    service: AgentService, systemd_version: int | None = None, unit_dir: str | None = None
) -> Definition:
    """The definition for ``service.platform``; systemd's version adds its newer keys.

    Each renderer is imported when asked for, so the agent's other commands do not load
    three platforms' renderers to build their argument parser."""
    from agent.service import launchd, systemd, windows

    if service.platform == "linux":
        unit_path = PurePosixPath(unit_dir or systemd.UNIT_DIR) / SYSTEMD_UNIT
        text = systemd.render_unit(service, systemd_version)
        return Definition(text, tuple(systemd.next_steps(service, unit_path)))
    if service.platform == "darwin":
        return Definition(launchd.render_plist(service), tuple(launchd.next_steps(service)))
    if service.platform == "windows":
        return Definition(windows.render_script(service), tuple(windows.next_steps(service)))
    raise ServiceError(f"no service definition for platform {service.platform!r}")
