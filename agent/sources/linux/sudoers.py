"""``sudoers``: the rules sudo applies, with its include directives followed.

Rows follow osquery's table: ``source`` is the file a line came from, ``header`` its first
word (``Defaults``, ``root``, ``%sudo``, ``Cmnd_Alias``...) and ``rule_details`` the rest,
with runs of whitespace collapsed. An include directive gives a row of its own (header
``include`` or ``includedir``, the path as details) before the rows of what it includes, so a
policy can see where a rule lives. Beyond osquery, this also follows sudo 1.9's ``@include``
and ``@includedir`` spellings, strips quotes around include paths, and joins lines continued
with a trailing backslash, as sudo itself reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from agent.sources.base import Row
from agent.sources.linux.common import make_row, read_optional, read_required

__all__ = ["SUDOERS_PATH", "collect_sudoers", "sudoers_rows"]

log = logging.getLogger(__name__)

SUDOERS_PATH = Path("/etc/sudoers")

#: sudoers(5): no more than 128 files may be nested.
_MAX_DEPTH = 128

_INCLUDE = frozenset({"#include", "@include"})
_INCLUDEDIR = frozenset({"#includedir", "@includedir"})


def _logical_lines(text: str) -> Iterator[str]:
    """Stripped lines of ``text``, with backslash-continued lines joined into one."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield (pending + line).strip()
        pending = ""
    if pending.strip():
        yield pending.strip()


def _include_target(including: Path, argument: str) -> Path:
    """An include path, unquoted and, when relative, taken from the including file's folder."""
    target = Path(argument.strip().strip('"'))
    return target if target.is_absolute() else including.parent / target


def _included_files(directory: Path) -> list[Path]:
    """Files sudo reads from an includedir: lexical order, none containing "." or ending "~"."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        log.info("sudoers: cannot list includedir %s", directory)
        return []
    return [
        entry
        for entry in entries
        if "." not in entry.name and not entry.name.endswith("~") and entry.is_file()
    ]


def _row(source: Path, header: str, details: str) -> Row:
    return make_row("sudoers", {"source": str(source), "header": header, "rule_details": details})


def _read(path: Path, text: str, depth: int, rows: list[Row]) -> None:
    for line in _logical_lines(text):
        words = line.split()
        if not words:
            continue
        first, argument = words[0], line[len(words[0]) :]
        if first in _INCLUDEDIR and argument.strip():
            directory = _include_target(path, argument)
            rows.append(_row(path, "includedir", str(directory)))
            for included in _included_files(directory):
                _follow(included, depth + 1, rows)
        elif first in _INCLUDE and argument.strip():
            target = _include_target(path, argument)
            rows.append(_row(path, "include", str(target)))
            _follow(target, depth + 1, rows)
        elif not first.startswith("#"):
            rows.append(_row(path, first, " ".join(words[1:])))


def _follow(path: Path, depth: int, rows: list[Row]) -> None:
    if depth > _MAX_DEPTH:
        log.warning("sudoers: nesting deeper than %d files at %s, not followed", _MAX_DEPTH, path)
        return
    text = read_optional(path)
    if text is None:
        log.info("sudoers: cannot read included file %s", path)
        return
    _read(path, text, depth, rows)


def sudoers_rows(path: Path) -> list[Row]:
    """Rows for the sudoers file at ``path`` and everything it includes.

    No file means sudo is not installed: no rules, not an error. A file that exists but
    cannot be read is a ProbeError, so the table reads "could not check".
    """
    if not path.exists():
        return []
    rows: list[Row] = []
    _read(path, read_required(path, "sudoers"), 1, rows)
    return rows


def collect_sudoers() -> list[Row]:
    return sudoers_rows(SUDOERS_PATH)
