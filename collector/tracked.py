"""Which facts the collector tracks for history and configuration drift, and how.

A *tracked view* names the rows of one or more fact tables that make up one kind of
configuration (listening ports, local admins, installed packages, sshd settings...), the
**identity** columns that say which row is which, and the **compared** columns whose change
makes a row *modified*. Everything else in the rows (pids, sizes, times) is left out, so
volatile values raise no noise: a listening port is the same port whichever pid holds it.

Views with ``alerts`` raise configuration drift events when they differ from the host's
baseline; the others are kept as history only. Views with ``collect`` add their tables and
columns to every collection plan (``plan_with_tracking``), because the policy packs' plan
names only what policies read; the rest are tracked whenever policies collect them anyway.

Catalogue tables without a view are tracked as history with the whole row as identity
(``default_view``), except the ``VOLATILE`` ones, whose rows change with every collection.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from collector.policy.plan import CollectionPlan, PlannedTable
from protos.posture.v1.tables import KEYED_TABLES, PATH_TABLES, TABLES, is_volatile_sysctl

__all__ = [
    "TRACKED",
    "VOLATILE",
    "Row",
    "TrackedView",
    "default_view",
    "plan_with_tracking",
    "views_for_tables",
]

Row = Mapping[str, str]
Derive = Callable[[Mapping[str, Sequence[Row]]], list[dict[str, str]]]

ALL = frozenset({"linux", "darwin", "windows"})
POSIX = frozenset({"linux", "darwin"})
LINUX = frozenset({"linux"})
DARWIN = frozenset({"darwin"})
WINDOWS = frozenset({"windows"})

#: Tables whose rows change with every collection: no history, no drift.
VOLATILE = frozenset({"uptime", "process_open_sockets"})

#: Groups whose members administer the machine, per platform family.
ADMIN_GROUPS = frozenset({"sudo", "wheel", "admin", "administrators"})

#: UDP ports the kernel hands to clients (Linux ``ip_local_port_range`` default); a UDP
#: socket there is a client's, and is tracked without its port so each restart is not news.
EPHEMERAL_UDP = range(32768, 61000)

#: Kernel tunables worth tracking; the rest (entropy, inode counts...) change on their own.
SYSCTL_PREFIXES = (
    "kernel.",
    "net.ipv4.ip_forward",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.icmp_",
    "net.ipv4.conf.all.",
    "net.ipv4.conf.default.",
    "net.ipv6.conf.all.",
    "net.ipv6.conf.default.",
    "fs.protected_",
    "fs.suid_dumpable",
    "vm.mmap_min_addr",
    "user.max_user_namespaces",
    "dev.tty.ldisc_autoload",
)

SSHD_PATHS = ("/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/%")
_SSHD_PATH = re.compile(r"^/etc/ssh/sshd_config(\.d/[^/]+)?$")


@dataclass(frozen=True)
class TrackedView:
    """One tracked kind of configuration (see the module docstring).

    ``columns`` lists, per source table, the columns the view reads (identity and compared
    columns of its single source when not given). ``derive`` turns the sources' rows into
    the view's rows; without it the view's rows are its single source's rows.
    """

    name: str
    platforms: frozenset[str]
    sources: tuple[str, ...]
    identity: tuple[str, ...]
    compared: tuple[str, ...] = ()
    alerts: bool = True
    collect: bool = True
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    derive: Derive | None = None
    description: str = ""

    def source_columns(self, table: str) -> tuple[str, ...]:
        return self.columns.get(table, (*self.identity, *self.compared))

    def rows(self, tables: Mapping[str, Sequence[Row]]) -> list[Row]:
        """The view's rows, given the rows of its source tables."""
        if self.derive is not None:
            return list(self.derive(tables))
        return list(tables.get(self.sources[0], ()))


def _listening_ports(tables: Mapping[str, Sequence[Row]]) -> list[dict[str, str]]:
    rows = []
    for row in tables.get("listening_ports", ()):
        port = row.get("port", "")
        ephemeral = row.get("protocol") == "17" and port.isdigit() and int(port) in EPHEMERAL_UDP
        rows.append({**row, "port": "ephemeral" if ephemeral else port})
    return rows


def _local_admins(tables: Mapping[str, Sequence[Row]]) -> list[dict[str, str]]:
    """Members of an administrators' group, by name: by membership or primary group."""
    admin_gids = {
        row.get("gid", ""): row.get("groupname", "")
        for row in tables.get("groups", ())
        if row.get("groupname", "").lower() in ADMIN_GROUPS
    }
    names = {row.get("uid", ""): row.get("username", "") for row in tables.get("users", ())}
    pairs = {(row.get("uid", ""), row.get("gid", "")) for row in tables.get("user_groups", ())}
    pairs |= {(row.get("uid", ""), row.get("gid", "")) for row in tables.get("users", ())}
    return [
        {"username": names.get(uid) or uid, "groupname": admin_gids[gid]}
        for uid, gid in sorted(pairs)
        if gid in admin_gids
    ]


def _sshd_settings(tables: Mapping[str, Sequence[Row]]) -> list[dict[str, str]]:
    """sshd keywords per file and Match block, as sshd reads them (case-insensitive keys)."""
    rows = []
    block: dict[str, str] = {}
    for row in tables.get("file_lines", ()):
        path, line = row.get("path", ""), row.get("line", "").strip()
        if not _SSHD_PATH.match(path) or not line or line.startswith("#"):
            continue
        keyword, _, value = line.replace("=", " ", 1).partition(" ")
        keyword, value = keyword.lower(), value.strip()
        if keyword == "match":
            block[path] = value
            continue
        rows.append(
            {"path": path, "block": block.get(path, ""), "keyword": keyword, "value": value}
        )
    return rows


def _security_sysctls(tables: Mapping[str, Sequence[Row]]) -> list[dict[str, str]]:
    return [
        dict(row)
        for row in tables.get("system_controls", ())
        if row.get("name", "").startswith(SYSCTL_PREFIXES)
        and not is_volatile_sysctl(row.get("name", ""))
    ]


def _systemd_units(tables: Mapping[str, Sequence[Row]]) -> list[dict[str, str]]:
    """Units installed from files (not transient session scopes) that run something."""
    return [
        dict(row)
        for row in tables.get("systemd_units", ())
        if row.get("id", "").endswith((".service", ".socket", ".timer"))
        and row.get("unit_file_state", "") not in ("", "transient")
    ]


_USER_COLUMNS = ("uid", "gid", "username")

TRACKED: tuple[TrackedView, ...] = (
    TrackedView(
        "listening_ports",
        ALL,
        ("listening_ports",),
        identity=("port", "protocol", "family", "address", "path"),
        derive=_listening_ports,
        description="listening sockets by port, protocol, address and program, not pid",
    ),
    TrackedView(
        "users",
        ALL,
        ("users",),
        identity=("username",),
        compared=("uid", "gid", "directory", "shell"),
    ),
    TrackedView("groups", ALL, ("groups",), identity=("groupname",), compared=("gid",)),
    TrackedView(
        "local_admins",
        ALL,
        ("users", "groups", "user_groups"),
        identity=("username", "groupname"),
        columns={
            "users": _USER_COLUMNS,
            "groups": ("gid", "groupname"),
            "user_groups": ("uid", "gid"),
        },
        derive=_local_admins,
        description="members of sudo, wheel, admin or Administrators",
    ),
    TrackedView("kernel_modules", LINUX, ("kernel_modules",), identity=("name",)),
    TrackedView(
        "systemd_units",
        LINUX,
        ("systemd_units",),
        identity=("id",),
        compared=("unit_file_state",),
        derive=_systemd_units,
    ),
    TrackedView(
        "services",
        WINDOWS,
        ("services",),
        identity=("name",),
        compared=("start_type", "path", "user_account"),
    ),
    TrackedView(
        "startup_items",
        ALL,
        ("startup_items",),
        identity=("name", "path", "type", "source"),
        compared=("args", "username"),
    ),
    TrackedView(
        "deb_packages", LINUX, ("deb_packages",), identity=("name", "arch"), compared=("version",)
    ),
    TrackedView(
        "rpm_packages",
        LINUX,
        ("rpm_packages",),
        identity=("name", "arch"),
        compared=("version", "release", "epoch"),
    ),
    TrackedView(
        "programs", WINDOWS, ("programs",), identity=("name",), compared=("version", "publisher")
    ),
    TrackedView(
        "apps",
        DARWIN,
        ("apps",),
        identity=("bundle_identifier", "path"),
        compared=("bundle_short_version",),
    ),
    TrackedView(
        "sshd_settings",
        POSIX,
        ("file_lines",),
        identity=("path", "block", "keyword"),
        compared=("value",),
        paths={"file_lines": SSHD_PATHS},
        columns={"file_lines": ("path", "line")},
        derive=_sshd_settings,
        description="sshd_config and its drop-ins, keyword by keyword",
    ),
    TrackedView(
        "authorized_keys",
        POSIX,
        ("authorized_keys",),
        identity=("uid", "key_file", "algorithm", "key"),
        compared=("options",),
    ),
    TrackedView("sudoers", POSIX, ("sudoers",), identity=("source", "header", "rule_details")),
    TrackedView(
        "crontab",
        POSIX,
        ("crontab",),
        identity=(
            "path",
            "event",
            "minute",
            "hour",
            "day_of_month",
            "month",
            "day_of_week",
            "command",
        ),
    ),
    TrackedView(
        "system_controls",
        POSIX,
        ("system_controls",),
        identity=("name",),
        compared=("current_value", "config_value"),
        collect=False,
        paths={"system_controls": tuple(f"{prefix}%" for prefix in SYSCTL_PREFIXES)},
        derive=_security_sysctls,
        description="security-relevant kernel tunables (running and configured values)",
    ),
    TrackedView(
        "file",
        ALL,
        ("file",),
        identity=("path",),
        compared=("mode", "uid", "gid", "type"),
        collect=False,
        description="ownership and permissions of the files policies read",
    ),
    TrackedView("hash", ALL, ("hash",), identity=("path",), compared=("sha256",), collect=False),
    TrackedView(
        "processes", ALL, ("processes",), identity=("name", "path"), alerts=False, collect=False
    ),
    TrackedView(
        "mounts",
        POSIX,
        ("mounts",),
        identity=("path",),
        compared=("device", "type", "flags"),
        alerts=False,
        collect=False,
    ),
    TrackedView(
        "logged_in_users",
        ALL,
        ("logged_in_users",),
        identity=("type", "user", "tty", "host"),
        alerts=False,
        collect=False,
    ),
)

_BY_NAME = {view.name: view for view in TRACKED}


def default_view(table: str) -> TrackedView:
    """History for a catalogue table without a declared view: the whole row is its identity."""
    return TrackedView(
        table, TABLES[table].platforms, (table,), identity=(), alerts=False, collect=False
    )


def views_for_tables(tables: frozenset[str] | set[str]) -> list[TrackedView]:
    """Every view (declared or default) reading one of ``tables``, in a stable order."""
    views = [view for view in TRACKED if not tables.isdisjoint(view.sources)]
    views += [
        default_view(table)
        for table in sorted(tables)
        if table in TABLES and table not in VOLATILE and table not in _BY_NAME
    ]
    return views


def plan_with_tracking(plan: CollectionPlan, platform: str) -> CollectionPlan:
    """``plan`` plus the tables, columns and paths the collected views of ``platform`` need.

    A table the plan collects whole (no columns listed) stays whole; otherwise the columns
    are the union of what the policies and the views read.
    """
    tables = {table.name: table for table in plan.tables}
    for view in TRACKED:
        if platform not in view.platforms:
            continue
        for source in view.sources:
            if source not in TABLES or platform not in TABLES[source].platforms:
                continue
            if view.collect:
                tables[source] = _merge(tables.get(source), view, source)
            elif source in KEYED_TABLES and source in tables:
                tables[source] = _widen_rows(tables[source], view, source)
    merged = tuple(tables[name] for name in sorted(tables))
    return CollectionPlan(
        _plan_version(plan.interval_seconds, merged), plan.interval_seconds, merged
    )


def _merge(planned: PlannedTable | None, view: TrackedView, source: str) -> PlannedTable:
    wanted = set(view.source_columns(source)) & set(TABLES[source].column_names())
    paths = set(view.paths.get(source, ())) if source in PATH_TABLES else set()
    if planned is None:
        return PlannedTable(source, tuple(sorted(paths)), tuple(sorted(wanted)))
    columns = planned.columns and tuple(sorted(set(planned.columns) | wanted))
    return PlannedTable(source, tuple(sorted(set(planned.paths) | paths)), columns)


def _widen_rows(planned: PlannedTable, view: TrackedView, source: str) -> PlannedTable:
    """A keyed table the policies narrow to named rows also gets the rows a view tracks
    of it (or every row when the view names none), so drift keeps its baseline's rows."""
    if not planned.paths:
        return planned
    rows = view.paths.get(source, ())
    merged = tuple(sorted(set(planned.paths) | set(rows))) if rows else ()
    return PlannedTable(source, merged, planned.columns)


def _plan_version(interval_seconds: int, tables: tuple[PlannedTable, ...]) -> str:
    """A digest of the plan's content, as ``collection_plan`` computes its own."""
    content = {"interval_seconds": interval_seconds, "tables": [t.to_dict() for t in tables]}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
