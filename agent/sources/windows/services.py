"""``services``: Windows services through psutil (the Service Control Manager's own view).

psutil asks the Service Control Manager directly, with no PowerShell to start; its values
are translated to osquery's:

==============  ===============================  =========================================
column          psutil                           values
==============  ===============================  =========================================
status          status()                         running -> RUNNING, stopped -> STOPPED,
                                                 start_pending -> START_PENDING, ...
                                                 (upper case, as the SCM names them)
start_type      start_type()                     automatic -> AUTO_START,
                                                 manual -> DEMAND_START,
                                                 disabled -> DISABLED
pid             pid()                            the process id; "" when not running
path            binpath()                        the command line the SCM starts
user_account    username()                       e.g. LocalSystem
==============  ===============================  =========================================

psutil does not report the service type, exit codes or a service DLL's path: those
columns are "". A service that disappears while being read is left out; one whose
configuration cannot be read keeps its name with the other columns "".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psutil

from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import make_row, text

__all__ = ["collect_services", "service_rows"]

_START_TYPES = {"automatic": "AUTO_START", "manual": "DEMAND_START", "disabled": "DISABLED"}


def _service_row(info: Mapping[str, object]) -> Row:
    start_type = text(info.get("start_type"))
    pid = info.get("pid")
    return make_row(
        "services",
        {
            "name": text(info.get("name")),
            "display_name": text(info.get("display_name")),
            "status": text(info.get("status")).upper(),
            "pid": text(pid) if pid else "",
            "start_type": _START_TYPES.get(start_type, start_type.upper()),
            "path": text(info.get("binpath")),
            "description": text(info.get("description")),
            "user_account": text(info.get("username")),
        },
    )


def service_rows(infos: Iterable[Mapping[str, object]]) -> list[Row]:
    """Rows from psutil's ``WindowsService.as_dict()`` dictionaries."""
    return [_service_row(info) for info in infos]


def _read(service: Any) -> Mapping[str, object] | None:
    try:
        info: Mapping[str, object] = service.as_dict()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return {"name": service.name(), "display_name": service.display_name()}
    return info


def collect_services(services: Callable[[], Iterable[Any]] | None = None) -> list[Row]:
    """Every service; ``services`` replaces ``psutil.win_service_iter`` in tests."""
    iterate = services or getattr(psutil, "win_service_iter", None)
    if iterate is None:
        raise ProbeError("services: psutil cannot list Windows services on this platform")
    infos = (_read(service) for service in iterate())
    return service_rows(info for info in infos if info is not None)
