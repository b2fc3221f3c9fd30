"""Keep the daemon's memory near its floor between collections.

A collection builds tens of thousands of short-lived strings and dicts, then the daemon
sleeps for five minutes. glibc's allocator keeps what was freed: one heap per thread that
ever allocated (the probes, SQLite and gRPC each run in their own threads), trimmed only
when a large block at the top of a heap is free. Measured on the daemon (see
docs/performance.md), that made its RSS swing between 58 and 75 MB. Limiting glibc to two
heaps, returning large blocks to the kernel when they are freed and trimming after each
collection keep it flat at the floor of what is imported, for about 5 ms per collection.

Only glibc has these knobs; elsewhere (macOS, Windows, musl) both calls do nothing.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
from functools import cache
from typing import Any

__all__ = ["freeze_startup_objects", "release_memory", "tune_allocator"]

log = logging.getLogger("posture.agent")

#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Blocks this large are mapped on their own and unmapped when freed, and a heap whose free
#: top exceeds it is trimmed: a collection's big row lists and strings go back at once.
_RETURN_ABOVE = 64 * 1024


@cache
def _glibc() -> Any:
    """glibc through ctypes, or None on another C library or platform."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # this process's symbols, libc's among them
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_allocator(arenas: int = 2) -> bool:
    """Bound glibc's heaps and return large blocks when freed; call before threads start.

    Returns whether the allocator took the settings (False off glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    settings = ((_M_ARENA_MAX, arenas), (_M_MMAP_THRESHOLD, _RETURN_ABOVE),
                (_M_TRIM_THRESHOLD, _RETURN_ABOVE))  # fmt: skip
    accepted = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    if not accepted:
        log.debug("glibc refused some mallopt settings; memory is not tuned")
    return accepted


def freeze_startup_objects() -> None:
    """Leave every object alive now (modules, classes, the catalogue) out of later garbage
    collections: they live as long as the process, and scanning their ~30,000 objects made
    each ``release_memory`` cost 12 ms instead of under 1 ms."""
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    """Free unreachable objects, then give glibc's free pages back to the kernel."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
