"""``file``, ``hash`` and ``file_lines``: only the paths a collection plan names.

Patterns follow osquery's path globbing: ``%`` matches any run of characters within one path
component (a glob ``*``, hidden files included) and ``%%`` any number of components
(``/home/%%/.ssh/%`` reaches every depth); all other characters, ``_`` included, are literal.
A pattern expands to at most ``MAX_MATCHES`` paths. A path that does not exist yields no row,
which is how osquery reports absence and how policies test for it.

``file_lines`` hands file contents to the collector, so it refuses files that hold secrets:
naming one (``/etc/shadow``, ``/etc/gshadow``, their backups, ``/etc/security/opasswd``, SSH
host private keys) is a ProbeError, and a pattern that happens to match one skips it. Their
metadata (``file``) and digests (``hash``) reveal nothing and stay available.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import itertools
import logging
import os
import stat
from collections.abc import Iterable

from agent.sources.base import ProbeError, Row
from agent.sources.linux.common import make_row

__all__ = [
    "HASH_MAX_BYTES",
    "LINES_MAX_BYTES",
    "MAX_MATCHES",
    "expand_pattern",
    "file_line_rows",
    "file_rows",
    "hash_rows",
    "is_secret",
]

log = logging.getLogger(__name__)

MAX_MATCHES = 10_000
#: osquery's read_max: larger files are listed in ``hash`` with empty digests.
HASH_MAX_BYTES = 50 * 1024 * 1024
#: ``file_lines`` reads at most this much of each file (its whole lines only).
LINES_MAX_BYTES = 1024 * 1024

_SECRET_PATTERNS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/security/opasswd.old",
    "/etc/ssh/ssh_host_*_key",
)

_TYPES = (
    (stat.S_ISREG, "regular"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISBLK, "block"),
    (stat.S_ISCHR, "character"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)


def expand_pattern(pattern: str) -> list[str]:
    """The existing paths ``pattern`` names (itself, unchecked, when it has no ``%``)."""
    if "%" not in pattern:
        return [pattern]
    glob_pattern = "**".join(
        "*".join(glob.escape(piece) for piece in part.split("%")) for part in pattern.split("%%")
    )
    matches = glob.iglob(glob_pattern, recursive=True, include_hidden=True)
    return sorted(itertools.islice(matches, MAX_MATCHES))


def is_secret(path: str) -> bool:
    """Whether ``path`` (symlinks resolved) is a file whose lines must never leave the host."""
    real = os.path.realpath(path)
    return any(fnmatch.fnmatchcase(real, secret) for secret in _SECRET_PATTERNS)


def _paths(patterns: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for pattern in patterns:
        for path in expand_pattern(pattern):
            seen.setdefault(path, None)
    return list(seen)


def _file_type(mode: int) -> str:
    return next((name for test, name in _TYPES if test(mode)), "unknown")


def _file_row(path: str) -> Row | None:
    try:
        link = os.lstat(path)
    except OSError:
        return None
    is_link = stat.S_ISLNK(link.st_mode)
    try:
        info = os.stat(path) if is_link else link
    except OSError:
        info = link
    trimmed = path.rstrip("/") or "/"
    values = {
        "path": path,
        "directory": os.path.dirname(trimmed),
        "filename": os.path.basename(trimmed),
        "inode": str(info.st_ino),
        "uid": str(info.st_uid),
        "gid": str(info.st_gid),
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "device": str(info.st_rdev),
        "size": str(info.st_size),
        "block_size": str(info.st_blksize),
        "atime": str(int(info.st_atime)),
        "mtime": str(int(info.st_mtime)),
        "ctime": str(int(info.st_ctime)),
        "hard_links": str(info.st_nlink),
        "symlink": "1" if is_link else "0",
        "type": _file_type(info.st_mode),
        "symlink_target_path": os.path.realpath(path) if is_link else "",
    }
    return make_row("file", values)


def file_rows(patterns: Iterable[str]) -> list[Row]:
    """osquery's ``file`` columns (``btime`` ""; Linux exposes birth time only via statx)."""
    return [row for path in _paths(patterns) if (row := _file_row(path)) is not None]


def _nonblocking(path: str, flags: int) -> int:
    """Open without blocking: a few "regular" files (/proc/kmsg) otherwise wait forever."""
    return os.open(path, flags | os.O_NONBLOCK)


def _digests(path: str) -> tuple[str, str, str] | None:
    hashers = (hashlib.md5(usedforsecurity=False), hashlib.sha1(), hashlib.sha256())
    try:
        with open(path, "rb", opener=_nonblocking) as handle:
            while chunk := handle.read(1024 * 1024):
                for hasher in hashers:
                    hasher.update(chunk)
    except OSError as error:
        log.info("hash: cannot read %s: %s", path, error.strerror)
        return None
    md5, sha1, sha256 = (hasher.hexdigest() for hasher in hashers)
    return md5, sha1, sha256


def hash_rows(patterns: Iterable[str]) -> list[Row]:
    """MD5, SHA-1 and SHA-256 of regular files; over ``HASH_MAX_BYTES`` the digests are ""."""
    rows = []
    for path in _paths(patterns):
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        digests = ("", "", "") if info.st_size > HASH_MAX_BYTES else _digests(path)
        if digests is None:
            continue
        values = {"path": path, "directory": os.path.dirname(path)}
        values.update(zip(("md5", "sha1", "sha256"), digests, strict=True))
        rows.append(make_row("hash", values))
    return rows


def _read_lines(path: str) -> list[str] | None:
    """Whole lines of a text file's first ``LINES_MAX_BYTES``; None if unreadable or binary."""
    try:
        with open(path, "rb", opener=_nonblocking) as handle:
            data = handle.read(LINES_MAX_BYTES + 1) or b""  # None: would block
    except OSError as error:
        log.info("file_lines: cannot read %s: %s", path, error.strerror)
        return None
    if b"\0" in data:
        log.info("file_lines: %s is not a text file, skipped", path)
        return None
    if len(data) > LINES_MAX_BYTES:
        log.warning("file_lines: %s is over %d bytes, only its start is read", path, len(data) - 1)
        head, newline, _ = data[:LINES_MAX_BYTES].rpartition(b"\n")
        data = head + newline
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def file_line_rows(patterns: Iterable[str]) -> list[Row]:
    """One row per line (newline removed) of each regular text file the patterns name."""
    patterns = list(patterns)
    for pattern in patterns:
        if "%" not in pattern and is_secret(pattern):
            raise ProbeError(f"file_lines: refusing to read {pattern}: it holds secrets")
    rows = []
    for path in _paths(patterns):
        if is_secret(path):
            log.warning("file_lines: %s holds secrets, skipped", path)
            continue
        if not os.path.isfile(path):
            continue
        lines = _read_lines(path)
        for line in lines or ():
            rows.append(make_row("file_lines", {"path": path, "line": line}))
    return rows
