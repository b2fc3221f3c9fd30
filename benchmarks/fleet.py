"""A synthetic fleet whose facts come from this machine's real ones, varied per host.

Every simulated host starts from the tables this machine's agent really collects for the
shipped packs' plan, then differs the way laptops differ: 150-350 processes with pids and
start times of its own, 1,000-1,600 packages, an extra user or listening port now and then.
Between reports a host changes at realistic rates: a few processes come and go in every
collection; packages, users and ports change rarely. Sizes follow GOALS.md's evaluation
anchor (a host of about 1,700 rows: 300 processes, 1,200 packages...), so the stored and
evaluated volume is a city laptop's, not this container's.

A host's state is a handful of numbers; its rows are built when a report needs them, so one
process can simulate 50,000 hosts. Rows are shared between hosts wherever they are equal.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.collect import TableResult, collect, table_digest
from agent.plan import CollectionPlan, plan_from_packs
from agent.sources import default_sources
from agent.sources.base import Row
from benchmarks.common import POLICIES

__all__ = [
    "FLIP_CHECK",
    "ChangeRates",
    "FleetBase",
    "SimulatedHost",
    "identity_of",
    "machine_facts",
    "machine_plan",
]

#: The check a flip toggles: a second uid-0 account fails it, removing it passes it again.
FLIP_CHECK = "city.linux.only-root-uid-0"
_FLIP_USER: Row = {"uid": "0", "gid": "0", "username": "toor", "shell": "/bin/sh",
                   "directory": "/root"}  # fmt: skip
_TEMP_USER: Row = {"uid": "1999", "gid": "1999", "username": "temp-contractor",
                   "shell": "/bin/bash", "directory": "/home/temp-contractor"}  # fmt: skip
_EXTRA_PORT: Row = {"address": "127.0.0.1", "pid": "4242", "port": "8080", "protocol": "6"}
_MAX_PACKAGES = 1_600
#: The tables a host changes; every other table stays this machine's, digest included.
VARIED = ("processes", "deb_packages", "users", "listening_ports", "system_info")


@dataclass(frozen=True)
class ChangeRates:
    """Per-report probabilities (a report is one collection, 5 minutes apart)."""

    process_churn: float = 0.05  # share of processes replaced in every report
    packages: float = 0.01  # an upgrade lands in about one report in a hundred (~8 h)
    ports: float = 0.05
    users: float = 0.002


def machine_plan(policies: Path = POLICIES) -> CollectionPlan:
    """The Linux plan the collector derives from the shipped packs."""
    return plan_from_packs(policies, "linux")


def machine_facts(plan: CollectionPlan | None = None) -> dict[str, TableResult]:
    """This machine's tables for ``plan``, collected by the real agent code."""
    return dict(collect(plan or machine_plan(), default_sources(None)).tables)


def identity_of(index: int) -> dict[str, str]:
    """Host ``index``'s identity, as its agent enrolls with it."""
    return {
        "hardware_uuid": SimulatedHost.uuid_of(index),
        "hardware_serial": f"CITY{index:08d}",
        "hostname": f"city-laptop-{index:05d}",
        "platform": "linux",
        "os_version": "Debian GNU/Linux 12 (bookworm)",
        "agent_version": "0.1.0",
    }


@dataclass(frozen=True)
class FleetBase:
    """What all hosts share: this machine's tables and their digests, and row templates."""

    tables: Mapping[str, TableResult]
    digests: Mapping[str, str]
    process_templates: tuple[Row, ...]
    package_pool: tuple[Row, ...]

    @classmethod
    def from_tables(cls, tables: Mapping[str, TableResult]) -> FleetBase:
        processes = tables.get("processes", TableResult()).rows or [{"name": "proc"}]
        packages = list(tables.get("deb_packages", TableResult()).rows)
        template = dict(packages[0]) if packages else {"name": "", "version": "", "status": ""}
        rng = random.Random(0)
        for number in range(max(0, _MAX_PACKAGES - len(packages))):
            version = f"{rng.randrange(1, 9)}.{rng.randrange(40)}-{rng.randrange(9)}"
            packages.append({**template, "name": f"lib-city-{number:04d}", "version": version})
        return cls(
            tables=dict(tables),
            digests={name: table_digest(table) for name, table in tables.items()},
            process_templates=tuple(processes),
            package_pool=tuple(packages),
        )


@dataclass(slots=True)
class SimulatedHost:
    """One laptop: a few numbers from which its tables are built, and their digests."""

    index: int
    base: FleetBase
    process_count: int
    package_count: int
    first_pid: int = 1_000
    upgrades: dict[int, str] = field(default_factory=dict)
    extra_users: tuple[Row, ...] = ()
    extra_port: bool = False
    flipped: bool = False
    _digests: dict[str, str] = field(default_factory=dict)

    @classmethod
    def derived(cls, index: int, base: FleetBase) -> SimulatedHost:
        rng = random.Random(index)
        packages = rng.randrange(1_000, _MAX_PACKAGES) if "deb_packages" in base.tables else 0
        return cls(index, base, rng.randrange(150, 350), packages)

    @staticmethod
    def uuid_of(index: int) -> str:
        """A distinct hardware UUID per host: the collector refuses a duplicate identity."""
        return f"b3a7c0de-0000-4000-8000-{index:012d}"

    @property
    def hostname(self) -> str:
        return f"city-laptop-{self.index:05d}"

    def identity(self) -> dict[str, str]:
        return identity_of(self.index)

    # Tables ---------------------------------------------------------------------------

    def table(self, name: str) -> TableResult:
        base = self.base.tables[name]
        if name == "processes":
            return TableResult(self._processes())
        if name == "deb_packages":
            return TableResult(self._packages())
        if name == "users":
            return TableResult([*base.rows, *self.extra_users])
        if name == "listening_ports" and self.extra_port:
            return TableResult([*base.rows, _EXTRA_PORT])
        if name == "system_info" and base.rows:
            return TableResult([{**base.rows[0], "hostname": self.hostname,
                                 "uuid": self.uuid_of(self.index)}])  # fmt: skip
        return base

    def tables(self) -> dict[str, TableResult]:
        return {name: self.table(name) for name in self.base.tables}

    def digests(self) -> dict[str, str]:
        """Every table's digest, computed only for tables this host changed."""
        digests = dict(self.base.digests)
        for name in VARIED:
            if name in digests:
                if name not in self._digests:
                    self._digests[name] = table_digest(self.table(name))
                digests[name] = self._digests[name]
        return digests

    def _processes(self) -> list[Row]:
        templates = self.base.process_templates
        return [
            {
                **templates[pid % len(templates)],
                "pid": str(pid),
                "start_time": str(1_700_000_000 + pid * 7),
            }
            for pid in range(self.first_pid, self.first_pid + self.process_count)
        ]

    def _packages(self) -> list[Row]:
        pool = self.base.package_pool[: self.package_count]
        if not self.upgrades:
            return list(pool)
        return [
            {**row, "version": self.upgrades[n]} if n in self.upgrades else row
            for n, row in enumerate(pool)
        ]

    # Change -----------------------------------------------------------------------------

    def advance(self, rng: random.Random, rates: ChangeRates) -> set[str]:
        """One collection interval passes; returns the tables that changed."""
        churn = max(1, int(self.process_count * rates.process_churn))
        self.first_pid += churn  # the oldest exit, as many new ones start
        changed = {"processes"}
        if self.package_count and rng.random() < rates.packages:
            upgraded = rng.randrange(self.package_count)
            version = self.upgrades.get(upgraded, self.base.package_pool[upgraded]["version"])
            self.upgrades[upgraded] = version + "+1"
            changed.add("deb_packages")
        if "listening_ports" in self.base.tables and rng.random() < rates.ports:
            self.extra_port = not self.extra_port
            changed.add("listening_ports")
        if "users" in self.base.tables and rng.random() < rates.users:
            self._toggle_user(_TEMP_USER)
            changed.add("users")
        for name in changed:
            self._digests.pop(name, None)
        return changed

    def flip(self) -> str:
        """Toggle a second uid-0 account, flipping ``FLIP_CHECK``; returns that check's
        status once the collector has evaluated the change."""
        self._toggle_user(_FLIP_USER)
        self._digests.pop("users", None)
        self.flipped = not self.flipped
        return "fail" if self.flipped else "pass"

    def _toggle_user(self, user: Row) -> None:
        kept = tuple(row for row in self.extra_users if row["username"] != user["username"])
        self.extra_users = kept if len(kept) < len(self.extra_users) else (*kept, user)
