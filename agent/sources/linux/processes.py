"""``processes``: every running process, read straight from /proc.

Each process costs three small reads (``stat``, ``status``, ``cmdline``) and three readlinks
(``exe``, ``cwd``, ``root``). psutil's ``process_iter(attrs=...)`` gathers the same columns
but, measured here, spends about 190 µs of CPU per process in its per-attribute wrappers,
against about 85 µs for this reader: on a laptop with 400 processes, 0.08 against 0.03 CPU
seconds every five minutes, out of a 0.25 s budget for the whole collection.

Columns that would need further per-process reads (disk I/O counters, which only root may
read; the cgroup path) are left "". ``name`` is the kernel's ``comm`` (at most 15 bytes), as
osquery reports it. A deleted executable keeps its path with ``on_disk = 0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from agent.sources.base import Row
from agent.sources.linux.common import make_row

__all__ = [
    "ProcStat",
    "collect_processes",
    "parse_proc_stat",
    "parse_status_ids",
    "process_row",
    "read_boot_time",
    "read_exe",
]

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_DELETED = " (deleted)"


class ProcStat(NamedTuple):
    """The fields of /proc/<pid>/stat this table uses (times in clock ticks, rss in pages)."""

    comm: str
    state: str
    ppid: int
    pgrp: int
    utime: int
    stime: int
    nice: int
    threads: int
    starttime: int
    vsize: int
    rss: int


def _read(path: str) -> bytes | None:
    """The whole of a /proc file, or None if the process is gone or it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def read_exe(pid: int) -> str:
    """The path of a process's executable ("" if unknown), without a " (deleted)" suffix."""
    return _readlink(f"/proc/{pid}/exe").removesuffix(_DELETED)


def read_boot_time(proc: Path = PROC) -> float:
    """Boot time in Unix seconds (``btime`` of /proc/stat), the base of process start times."""
    for line in (_read(str(proc / "stat")) or b"").decode().splitlines():
        key, _, value = line.partition(" ")
        if key == "btime":
            return float(value)
    return 0.0


def parse_proc_stat(text: str) -> ProcStat:
    """Parse a /proc/<pid>/stat line; comm may itself hold spaces and parentheses."""
    close = text.rindex(")")
    rest = text[close + 2 :].split()
    # proc(5) numbers fields from 1 (pid) and 2 (comm); ``rest`` starts at field 3 (state).
    numbers = [int(rest[field - 3]) for field in (4, 5, 14, 15, 19, 20, 22, 23, 24)]
    return ProcStat(text[text.index("(") + 1 : close], rest[0], *numbers)


def parse_status_ids(text: str) -> dict[str, str]:
    """Real, effective and saved uid and gid from /proc/<pid>/status, under osquery's names."""
    ids: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            real, effective, saved = value.split()[:3]
            prefix = key[0].lower()
            ids.update(
                {prefix + "id": real, "e" + prefix + "id": effective, "s" + prefix + "id": saved}
            )
    return ids


def process_row(
    pid: int,
    stat: str,
    status: str,
    cmdline: bytes,
    boot_time: float,
    links: tuple[str, str, str] = ("", "", ""),
) -> Row:
    """A processes row from a process's /proc files and its (exe, cwd, root) links."""
    fields = parse_proc_stat(stat)
    exe = links[0].removesuffix(_DELETED)
    values = {
        "pid": str(pid),
        "name": fields.comm,
        "path": exe,
        "on_disk": "-1" if not exe else "0" if links[0].endswith(_DELETED) else "1",
        "cmdline": cmdline.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace"),
        "state": fields.state,
        "cwd": links[1],
        "root": links[2],
        "parent": str(fields.ppid),
        "pgroup": str(fields.pgrp),
        "nice": str(fields.nice),
        "threads": str(fields.threads),
        "user_time": str(fields.utime * 1000 // CLOCK_TICKS),
        "system_time": str(fields.stime * 1000 // CLOCK_TICKS),
        "start_time": str(int(boot_time + fields.starttime / CLOCK_TICKS)),
        "total_size": str(fields.vsize),
        "resident_size": str(fields.rss * PAGE_SIZE),
        **parse_status_ids(status),
    }
    return make_row("processes", values)


def _process(pid: int, boot_time: float) -> Row | None:
    """The row of one process; None when it exited while being read."""
    base = f"/proc/{pid}/"
    stat, status = _read(base + "stat"), _read(base + "status")
    if stat is None or status is None:
        return None
    links = (_readlink(base + "exe"), _readlink(base + "cwd"), _readlink(base + "root"))
    cmdline = _read(base + "cmdline") or b""
    try:
        return process_row(
            pid,
            stat.decode(errors="replace"),
            status.decode(errors="replace"),
            cmdline,
            boot_time,
            links,
        )
    except (ValueError, IndexError):
        return None  # a stat line cut short by the process exiting mid-read


def collect_processes() -> list[Row]:
    boot_time = read_boot_time()
    pids = sorted(int(name) for name in os.listdir(PROC) if name.isdigit())
    return [row for pid in pids if (row := _process(pid, boot_time)) is not None]
