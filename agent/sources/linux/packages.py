"""Installed software: ``deb_packages`` and ``rpm_packages``.

dpkg's database is one text file, so it is parsed directly (no ``dpkg-query`` process).
rpm's database is binary (Berkeley DB, NDB or SQLite depending on the distribution), so the
``rpm`` program reads it, through the runner, with a query format that separates fields by
ASCII unit separators and packages by record separators: no package field can hold those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from agent.runner import Runner
from agent.sources.base import Row
from agent.sources.linux.common import make_row, read_required

__all__ = [
    "DPKG_ADMINDIR",
    "RPM_DB_DIRS",
    "RPM_QUERY",
    "collect_deb_packages",
    "collect_rpm_packages",
    "parse_dpkg_status",
    "parse_rpm_query",
    "rpm_database_present",
]

DPKG_ADMINDIR = Path("/var/lib/dpkg")
RPM_DB_DIRS = (Path("/var/lib/rpm"), Path("/usr/lib/sysimage/rpm"))

#: dpkg states whose files are on disk. "not-installed" and "config-files" (removed but not
#: purged: only configuration remains) are left out, so a removed package never matches.
_PRESENT_STATES = frozenset(
    {
        "installed",
        "half-installed",
        "unpacked",
        "half-configured",
        "triggers-awaited",
        "triggers-pending",
    }
)

_DEB_FIELDS = {
    "Package": "name",
    "Version": "version",
    "Source": "source",
    "Installed-Size": "size",
    "Architecture": "arch",
    "Status": "status",
    "Maintainer": "maintainer",
    "Section": "section",
    "Priority": "priority",
}


_STANZA_BREAK = re.compile(r"\n[ \t]*\n")


def _field(stanza: str, name: str) -> str:
    """The first-line value of field ``name`` in one deb822 paragraph ("" when absent).

    A field starts a line; continuation lines start with a space, so searching for
    newline + name + colon never lands inside another field's value.
    """
    if stanza.startswith(name + ":"):
        start = len(name) + 1
    else:
        start = stanza.find("\n" + name + ":")
        if start < 0:
            return ""
        start += len(name) + 2
    end = stanza.find("\n", start)
    return stanza[start : end if end >= 0 else len(stanza)].strip()


def _deb_revision(version: str) -> str:
    """The Debian revision: what follows the last hyphen ("" for a native package)."""
    upstream, hyphen, revision = version.rpartition("-")
    return revision if hyphen and upstream else ""


def _wanted_fields(columns: Iterable[str]) -> dict[str, str]:
    """deb822 field -> column for ``columns`` (every column when empty)."""
    wanted = set(columns)
    if "revision" in wanted:
        wanted.add("version")
    return {f: c for f, c in _DEB_FIELDS.items() if not wanted or c in wanted}


def parse_dpkg_status(
    text: str, admindir: str = str(DPKG_ADMINDIR), columns: Iterable[str] = ()
) -> list[Row]:
    """deb_packages rows for the packages present on disk in a dpkg ``status`` file.

    Only the fields ``columns`` need are read (every one when empty): a plan asking for
    name, version and status skips most of each stanza, which is most of the work with
    ~1,000 packages. Columns not read are "".
    """
    fields = _wanted_fields(columns)
    fields.pop("Package", None)
    keep_status = fields.pop("Status", None) is not None
    rows = []
    for stanza in _STANZA_BREAK.split(text):
        status = _field(stanza, "Status")
        state = status.split()
        name = _field(stanza, "Package")
        if len(state) != 3 or state[2] not in _PRESENT_STATES or not name:
            continue
        values = {column: _field(stanza, field) for field, column in fields.items()}
        values["name"], values["admindir"] = name, admindir
        if keep_status:
            values["status"] = status
        if "version" in values:
            values["revision"] = _deb_revision(values["version"])
        rows.append(make_row("deb_packages", values))
    return rows


def collect_deb_packages(columns: Iterable[str] = ()) -> list[Row]:
    """No dpkg database means no deb packages (an RPM host), as osquery reports it: empty."""
    if not (DPKG_ADMINDIR / "status").is_file():
        return []
    status = read_required(DPKG_ADMINDIR / "status", "deb_packages")
    return parse_dpkg_status(status, str(DPKG_ADMINDIR), columns)


#: rpm_packages columns, in the order of the query format's tags.
_RPM_COLUMNS = (
    "name",
    "version",
    "release",
    "source",
    "size",
    "sha1",
    "arch",
    "epoch",
    "install_time",
    "vendor",
    "package_group",
)
_RPM_TAGS = (
    "NAME",
    "VERSION",
    "RELEASE",
    "SOURCERPM",
    "SIZE",
    "SHA1HEADER",
    "ARCH",
    "EPOCH",
    "INSTALLTIME",
    "VENDOR",
    "GROUP",
)
_FIELD_SEP = "\x1f"
_RECORD_SEP = "\x1e"

#: The ``rpm -qa --queryformat`` argument that ``parse_rpm_query`` reads.
RPM_QUERY = _FIELD_SEP.join(f"%{{{tag}}}" for tag in _RPM_TAGS) + _RECORD_SEP


def parse_rpm_query(text: str) -> list[Row]:
    """rpm_packages rows from ``rpm -qa --queryformat RPM_QUERY``; "(none)" becomes ""."""
    rows = []
    for record in text.split(_RECORD_SEP):
        fields = record.strip("\n").split(_FIELD_SEP)
        if len(fields) != len(_RPM_COLUMNS) or not fields[0]:
            continue
        values = {
            column: "" if value == "(none)" else value
            for column, value in zip(_RPM_COLUMNS, fields, strict=True)
        }
        rows.append(make_row("rpm_packages", values))
    return rows


def rpm_database_present(directories: tuple[Path, ...] = RPM_DB_DIRS) -> bool:
    """Whether an rpm database exists (Debian's rpm package leaves /var/lib/rpm empty)."""
    for directory in directories:
        try:
            if any(directory.iterdir()):
                return True
        except OSError:
            continue
    return False


def collect_rpm_packages(runner: Runner, directories: tuple[Path, ...] = RPM_DB_DIRS) -> list[Row]:
    """No rpm database means no rpm packages (a Debian host), as osquery reports it: empty."""
    if not rpm_database_present(directories):
        return []
    return parse_rpm_query(runner.run(["rpm", "-qa", "--queryformat", RPM_QUERY], timeout=60.0))
