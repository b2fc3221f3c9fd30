"""``system_controls``: every kernel tunable under /proc/sys with its configured value.

``current_value`` is what the kernel reports now; ``config_value`` is what the sysctl
configuration files would set at boot, resolved the way systemd-sysctl resolves them: the
``*.conf`` files of /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d
and /lib/sysctl.d, where a file name in an earlier directory masks the same name in a later
one, are read in file-name order (whatever their directory), and /etc/sysctl.conf after them
(as ``sysctl --system`` does). A later assignment wins. Keys may be written with "/" or "."
separators and may hold "*" globs (systemd 245+). The difference between the two values is
exactly what a hardening check needs: set now, but not persisted (or the reverse).

Entries the kernel will not let root read (write-only ones such as ``vm.compact_memory``,
or ``stable_secret`` before it is set) are skipped, and so are counters that change on every
read (``VOLATILE_SYSCTLS`` in the catalogue). A plan that names rows (``KEYED_TABLES``:
``net.ipv4.ip_forward``, ``kernel.%``) is honoured by descending only into the directories
that can hold a named entry and reading only those: about forty reads for the shipped packs
instead of about 1,300. With no names, every entry is read, with raw ``os.open``/``os.read``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.sources.base import ProbeError, Row
from agent.sources.linux.common import make_row, read_optional
from protos.posture.v1.tables import is_volatile_sysctl

__all__ = [
    "PROC_SYS",
    "SYSCTL_DIRS",
    "NameFilter",
    "SysctlConfig",
    "collect_system_controls",
    "config_files",
    "control_rows",
    "load_config",
]

PROC_SYS = Path("/proc/sys")
SYSCTL_DIRS = (
    Path("/etc/sysctl.d"),
    Path("/run/sysctl.d"),
    Path("/usr/local/lib/sysctl.d"),
    Path("/usr/lib/sysctl.d"),
    Path("/lib/sysctl.d"),
)
SYSCTL_CONF = Path("/etc/sysctl.conf")


@dataclass
class SysctlConfig:
    """Assignments from sysctl configuration; ``value_for`` applies "last one wins"."""

    exact: dict[str, tuple[int, str]] = field(default_factory=dict)
    globs: list[tuple[int, str, str]] = field(default_factory=list)
    count: int = 0

    def add_text(self, text: str) -> None:
        for raw in text.splitlines():
            line = raw.strip()
            key, sep, value = line.partition("=")
            if not sep or not line or line[0] in "#;":
                continue
            name = _normalize(key.strip().lstrip("-"))
            if not name or name.startswith("!"):
                continue
            self.count += 1
            if "*" in name or "?" in name:
                self.globs.append((self.count, name, value.strip()))
            else:
                self.exact[name] = (self.count, value.strip())

    def value_for(self, name: str) -> str:
        order, value = self.exact.get(name, (0, ""))
        for glob_order, pattern, glob_value in self.globs:
            if glob_order > order and fnmatch.fnmatchcase(name, pattern):
                order, value = glob_order, glob_value
        return value


def _normalize(key: str) -> str:
    """The dotted name of a key; "net/ipv4/ip_forward" and "net.ipv4.ip_forward" are one."""
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.replace("/", ".")
    return key


def config_files(directories: tuple[Path, ...], sysctl_conf: Path | None) -> list[Path]:
    """The files systemd-sysctl would read, in reading order (see the module docstring)."""
    chosen: dict[str, Path] = {}
    for directory in directories:
        try:
            names = sorted(entry.name for entry in directory.iterdir())
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf"):
                chosen.setdefault(name, directory / name)
    files = [chosen[name] for name in sorted(chosen)]
    if sysctl_conf is not None:
        resolved = {path.resolve() for path in files}
        if sysctl_conf.resolve() not in resolved:
            files.append(sysctl_conf)
    return files


def load_config(files: list[Path]) -> SysctlConfig:
    config = SysctlConfig()
    for path in files:
        text = read_optional(path)
        if text is not None:
            config.add_text(text)
    return config


def _read_value(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode("utf-8", errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


class NameFilter:
    """The kernel parameters a plan names: exact names, or patterns where ``%`` matches any
    run of characters (dots included) and ``_`` is itself; case is ignored (see
    ``KEYED_TABLES`` in the catalogue)."""

    def __init__(self, names: Iterable[str]) -> None:
        lowered = {name.lower() for name in names}
        self._exact = {name for name in lowered if "%" not in name}
        patterns = sorted(lowered - self._exact)
        self._pattern = re.compile(
            "|".join(".*".join(map(re.escape, p.split("%"))) for p in patterns) or "(?!)"
        )
        self._stems = tuple(p.partition("%")[0] for p in patterns)

    def matches(self, name: str) -> bool:
        lowered = name.lower()
        return lowered in self._exact or self._pattern.fullmatch(lowered) is not None

    def may_hold(self, directory: str) -> bool:
        """Whether an entry below ``directory`` (a dotted name) can match."""
        below = directory.lower() + "."
        return any(name.startswith(below) for name in self._exact) or any(
            stem.startswith(below) or below.startswith(stem) for stem in self._stems
        )


def _walk(
    directory: str, name: str, found: list[tuple[str, str]], wanted: NameFilter | None
) -> None:
    """Collect (dotted name, value) below ``directory`` (named ``name``), only where
    ``wanted`` can match; folders that vanish mid-walk are skipped."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                entry_name = f"{name}.{entry.name}" if name else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if wanted is None or wanted.may_hold(entry_name):
                        _walk(entry.path, entry_name, found, wanted)
                    continue
                if wanted is not None and not wanted.matches(entry_name):
                    continue
                value = _read_value(entry.path)
                if value is not None:
                    found.append((entry_name, value))
    except OSError:
        return


def control_rows(proc_sys: Path, config: SysctlConfig, names: Iterable[str] = ()) -> list[Row]:
    """One row per readable entry under ``proc_sys``, named like ``kernel.randomize_va_space``:
    every entry, or only those ``names`` match when it names any."""
    if not proc_sys.is_dir():
        raise ProbeError(f"system_controls: {proc_sys} is not mounted")
    names = tuple(names)
    found: list[tuple[str, str]] = []
    _walk(str(proc_sys), "", found, NameFilter(names) if names else None)
    rows = []
    for name, value in sorted(found):
        if is_volatile_sysctl(name):
            continue
        values = {
            "name": name,
            "subsystem": name.partition(".")[0],
            "current_value": value,
            "config_value": config.value_for(name),
            "type": "string",
        }
        rows.append(make_row("system_controls", values))
    return rows


def collect_system_controls(names: Iterable[str] = ()) -> list[Row]:
    """This host's kernel parameters: every one, or those ``names`` (a plan's) match."""
    config = load_config(config_files(SYSCTL_DIRS, SYSCTL_CONF))
    return control_rows(PROC_SYS, config, names)
