"""Collection plans: exactly what the checks read, per platform, with a content version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.policy.loader import load_packs
from collector.policy.model import Check, Pack, Severity
from collector.policy.plan import CollectionPlan, PlannedTable, collection_plan


def check(
    check_id: str,
    platforms: set[str],
    tables: set[str],
    paths: dict[str, tuple[str, ...]],
    columns: dict[str, tuple[str, ...]] | None = None,
) -> Check:
    return Check(
        id=check_id,
        title=check_id,
        description="d",
        rationale="r",
        remediation="m",
        severity=Severity.LOW,
        platforms=frozenset(platforms),
        frameworks={},
        query="SELECT 1",
        applies=None,
        evidence=None,
        tables=frozenset(tables),
        paths=paths,
        pack="p",
        source="pack.yaml",
        line=1,
        columns=columns or {},
    )


def pack(*checks: Check) -> Pack:
    return Pack("p", "1", "d", "0" * 64, Path("pack.yaml"), checks)


LINES: dict[str, tuple[str, ...]] = {"file_lines": ("line", "path")}
PACKS = [
    pack(
        check(
            "ssh",
            {"linux"},
            {"file_lines", "deb_packages"},
            {"file_lines": ("/etc/ssh/b",)},
            {**LINES, "deb_packages": ("name", "status")},
        ),
        check("shadow", {"linux"}, {"file"}, {"file": ("/etc/shadow",)}, {"file": ("mode",)}),
        check("bitlocker", {"windows"}, {"bitlocker_info"}, {}),
    ),
    pack(
        check("ssh-2", {"linux", "darwin"}, {"file_lines"}, {"file_lines": ("/etc/ssh/a",)}, LINES),
        check("users", {"linux", "darwin", "windows"}, {"users"}, {}, {"users": ("uid",)}),
        check("packages", {"linux"}, {"deb_packages"}, {}, {"deb_packages": ("version",)}),
        check("count-users", {"linux"}, {"users"}, {}, {"users": ()}),
    ),
]


def test_the_plan_is_the_union_of_what_a_platforms_checks_read() -> None:
    plan = collection_plan(PACKS, "linux", interval_seconds=600)
    assert plan.interval_seconds == 600
    assert plan.tables == (
        PlannedTable("deb_packages", (), ("name", "status", "version")),
        PlannedTable("file", ("/etc/shadow",), ("mode",)),
        PlannedTable("file_lines", ("/etc/ssh/a", "/etc/ssh/b"), ("line", "path")),
        PlannedTable("os_version"),
        PlannedTable("system_info"),
        PlannedTable("users", (), ("uid",)),
    )


def test_a_table_whose_rows_are_only_counted_is_sent_whole() -> None:
    counting = pack(check("count", {"darwin"}, {"users"}, {}, {"users": ()}))
    assert PlannedTable("users") in collection_plan([counting], "darwin").tables


def test_other_platforms_get_only_their_checks_tables() -> None:
    names = [table.name for table in collection_plan(PACKS, "windows").tables]
    assert names == ["bitlocker_info", "os_version", "system_info", "users"]


def test_without_a_platform_every_check_counts() -> None:
    names = {table.name for table in collection_plan(PACKS).tables}
    assert {"bitlocker_info", "deb_packages", "file", "file_lines", "users"} <= names


def test_registry_keys_are_planned_for_windows_only() -> None:
    key = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU"
    columns = {"registry": ("data", "path")}
    updates = pack(check("au", {"windows"}, {"registry"}, {"registry": (key,)}, columns))
    assert PlannedTable("registry", (key,), ("data", "path")) in (
        collection_plan([updates], "windows").tables
    )
    assert "registry" not in {table.name for table in collection_plan([updates], "linux").tables}


def test_the_shipped_packs_plan_registry_keys_with_full_hive_names() -> None:
    policies = Path(__file__).resolve().parents[2] / "policies"
    tables = {
        table.name: table for table in collection_plan(load_packs(policies), "windows").tables
    }
    assert tables["registry"].paths, "the city baseline reads Windows policy keys"
    assert all(key.startswith("HKEY_LOCAL_MACHINE\\") for key in tables["registry"].paths)
    assert "registry" not in {t.name for t in collection_plan(load_packs(policies), "linux").tables}


def test_host_identity_tables_are_always_planned() -> None:
    plan = collection_plan([], "darwin")
    assert plan.tables == (PlannedTable("os_version"), PlannedTable("system_info"))


def test_the_version_digests_the_content() -> None:
    plan = collection_plan(PACKS, "linux")
    assert len(plan.version) == 16 and int(plan.version, 16) >= 0
    assert collection_plan(list(reversed(PACKS)), "linux").version == plan.version
    assert collection_plan(PACKS, "linux", interval_seconds=60).version != plan.version
    assert collection_plan(PACKS[:1], "linux").version != plan.version


def test_the_plan_round_trips_through_json() -> None:
    plan = collection_plan(PACKS, "linux")
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["tables"][1] == {"name": "file", "paths": ["/etc/shadow"], "columns": ["mode"]}
    assert CollectionPlan.from_dict(data) == plan


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"interval_seconds": 300, "tables": []}, "'version' must be a non-empty string"),
        ({"version": "v", "interval_seconds": "300", "tables": []}, "'interval_seconds'"),
        ({"version": "v", "interval_seconds": 0, "tables": []}, "'interval_seconds'"),
        ({"version": "v", "interval_seconds": 300, "tables": {}}, "'tables' must be a list"),
        ({"version": "v", "interval_seconds": 300, "tables": [{"paths": []}]}, "string 'name'"),
        (
            {"version": "v", "interval_seconds": 300, "tables": [{"name": "file", "paths": "/"}]},
            "paths of table file must be a list of strings",
        ),
        (
            {"version": "v", "interval_seconds": 300, "tables": [{"name": "t", "columns": [1]}]},
            "columns of table t must be a list of strings",
        ),
    ],
)
def test_a_malformed_plan_is_refused_with_a_reason(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CollectionPlan.from_dict(data)
