"""Who this machine is, read through the same sources as any other fact."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from agent.collect import collect
from agent.plan import CollectionPlan
from agent.sources import platform
from agent.sources.base import FactSource, TableRequest

__all__ = ["host_identity"]

_PLAN = CollectionPlan("identity", 300, (TableRequest("system_info"), TableRequest("os_version")))


def host_identity(sources: Sequence[FactSource], agent_version: str) -> dict[str, str]:
    """The HostIdentity fields for enrollment; raises ValueError when no UUID can be read."""
    tables = collect(_PLAN, sources).tables
    system = next(iter(tables["system_info"].rows), {})
    os_row = next(iter(tables["os_version"].rows), {})
    uuid = system.get("uuid", "")
    if not uuid:
        reason = tables["system_info"].error or "system_info has no uuid"
        raise ValueError(f"cannot identify this machine: {reason}")
    return {
        "hardware_uuid": uuid,
        "hardware_serial": system.get("hardware_serial", ""),
        "hostname": system.get("hostname", "") or socket.gethostname(),
        "platform": platform(),
        "os_version": f"{os_row.get('name', '')} {os_row.get('version', '')}".strip(),
        "agent_version": agent_version,
    }
