"""``kernel_modules``: loaded kernel modules, from /proc/modules (as osquery reads them).

A kernel built without module support has no /proc/modules. The source then does not offer
this table at all, rather than reporting "no modules": a check such as "usb-storage is not
loaded" must read "could not check" there, since the driver may well be built in.
"""

from __future__ import annotations

from pathlib import Path

from agent.sources.base import ProbeError, Row
from agent.sources.linux.common import make_row, read_required

__all__ = ["PROC_MODULES", "collect_kernel_modules", "parse_proc_modules"]

PROC_MODULES = Path("/proc/modules")


def parse_proc_modules(text: str) -> list[Row]:
    """Rows for /proc/modules lines: name size refcount used_by state address [taints].

    ``used_by`` keeps the kernel's "-" for none and loses only the trailing comma, as
    osquery's does, so queries written against osquery compare equal.
    """
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        values = {
            "name": fields[0],
            "size": fields[1],
            "used_by": fields[3].rstrip(","),
            "status": fields[4],
            "address": fields[5],
        }
        rows.append(make_row("kernel_modules", values))
    return rows


def collect_kernel_modules() -> list[Row]:
    """Loaded modules; an error, not an empty table, on a kernel without module support.

    "No modules loaded" would pass a check like "usb-storage is not loaded" on a kernel
    where that driver is built in, so the analyst must see that it could not be checked.
    """
    if not PROC_MODULES.exists():
        raise ProbeError(
            "this kernel has no loadable module support (/proc/modules is absent);"
            " built-in drivers cannot be told apart"
        )
    return parse_proc_modules(read_required(PROC_MODULES, "kernel_modules"))
