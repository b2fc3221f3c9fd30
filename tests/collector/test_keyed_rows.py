"""Plans name the rows of keyed tables (system_controls) the checks read, and only those.

The unit tests pin which SQL forms narrow a read and which fall back to every row. The
shipped-pack test is the promise that matters: for every check reading system_controls, an
agent that honours the plan (reads only the named rows) yields the same verdict and the same
evidence as one that reads every kernel parameter, even with decoy rows built to mislead.
"""

from __future__ import annotations

import json
import sqlite3
from functools import cache
from pathlib import Path

import pytest

from agent.sources.linux.sysctl import NameFilter
from collector.policy.evaluate import Evaluator
from collector.policy.keyed import ALL_ROWS, find_keys
from collector.policy.loader import load_packs
from collector.policy.model import Check, CheckResult, Pack
from collector.policy.plan import CollectionPlan, PlannedTable, collection_plan
from collector.store.facts import create_fact_tables, replace_host_rows
from collector.tracked import SYSCTL_PREFIXES, plan_with_tracking

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SC = "system_controls"


def names(sql: str) -> set[str]:
    return find_keys(sql, {SC})[SC]


# --- which forms narrow a read --------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1 FROM system_controls WHERE name = 'fs.suid_dumpable'", {"fs.suid_dumpable"}),
        ("SELECT 1 FROM system_controls WHERE name == 'a.b' AND current_value = '0'", {"a.b"}),
        ("SELECT 1 FROM system_controls WHERE 'a.b' = name", {"a.b"}),
        ("SELECT 1 FROM system_controls s WHERE s.name IN ('a.b', 'c.d')", {"a.b", "c.d"}),
        ("SELECT 1 FROM system_controls AS s WHERE (s.name = 'a.b')", {"a.b"}),
        (
            "SELECT 1 FROM system_controls WHERE name LIKE 'net.ipv4.conf.%.rp_filter'",
            {"net.ipv4.conf.%.rp%filter"},  # LIKE's "_" is any one character: widened
        ),
        (
            "SELECT 1 FROM system_controls WHERE name = 'a.b' AND NOT EXISTS ("
            "SELECT 1 FROM system_controls WHERE name IN ('c.d') AND current_value <> '0')",
            {"a.b", "c.d"},
        ),
        (
            "SELECT 1 FROM system_controls WHERE name = 'a.b' AND (current_value = '1' OR "
            "current_value = '2')",
            {"a.b"},
        ),
        (
            "WITH wanted(name, value) AS (VALUES ('a.b', '2'), ('c.d', '0')) "
            "SELECT w.name FROM wanted AS w LEFT JOIN system_controls AS s ON s.name = w.name "
            "WHERE s.name IS NULL OR s.current_value <> w.value",
            {"a.b", "c.d"},
        ),
        (
            "WITH wanted(value, name) AS (VALUES ('2', 'a.b')) "
            "SELECT 1 FROM system_controls s JOIN wanted w ON w.name = s.name",
            {"a.b"},
        ),
        (
            "SELECT current_value FROM system_controls WHERE name = 'a.b' "
            "UNION ALL SELECT current_value FROM system_controls WHERE name = 'c.d'",
            {"a.b", "c.d"},
        ),
    ],
)
def test_constrained_reads_name_their_rows(sql: str, expected: set[str]) -> None:
    assert names(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 FROM system_controls WHERE current_value = '0'",
        "SELECT count(*) FROM system_controls",
        "SELECT 1 FROM system_controls WHERE name = 'a.b' OR current_value = '1'",
        "SELECT 1 FROM system_controls WHERE NOT name = 'a.b'",
        "SELECT 1 FROM system_controls WHERE NOT (name = 'a.b' AND current_value = '1')",
        "SELECT 1 FROM system_controls WHERE name NOT IN ('a.b')",
        "SELECT 1 FROM system_controls WHERE name <> 'a.b'",
        "SELECT name = 'a.b' FROM system_controls",
        "SELECT 1 FROM system_controls WHERE iif(name = 'a.b', 1, 1)",
        "SELECT 1 FROM system_controls WHERE CASE WHEN name = 'a.b' THEN 1 ELSE 1 END",
        "SELECT 1 FROM system_controls WHERE name = 'a.' || current_value",
        "SELECT 1 FROM system_controls WHERE name IN (SELECT 'a.b')",
        "SELECT 1 FROM system_controls WHERE name LIKE 'a!%' ESCAPE '!'",
        "SELECT count(*) FROM system_controls HAVING name = 'a.b'",
        # the second read is not narrowed, so the statement needs every row
        "SELECT 1 FROM system_controls WHERE name = 'a.b' AND EXISTS ("
        "SELECT 1 FROM system_controls WHERE current_value = '1')",
        # the test binds the other table, and a subquery reads system_controls whole
        "SELECT 1 FROM deb_packages WHERE name = 'procps' AND EXISTS ("
        "SELECT 1 FROM system_controls WHERE current_value = '1')",
        # names taken from another fact table cannot be known in advance
        "SELECT 1 FROM file_lines f JOIN system_controls s ON s.name = f.line "
        "WHERE f.path = '/etc/sysctl.conf'",
        # system_controls is the side a LEFT JOIN keeps: ON does not filter its rows
        "SELECT 1 FROM system_controls s LEFT JOIN users u ON s.name = 'a.b'",
        # a CTE that is not a table of literals
        "WITH wanted(name) AS (SELECT name FROM kernel_modules) "
        "SELECT 1 FROM wanted w JOIN system_controls s ON s.name = w.name",
        "SELECT 1 FROM system_controls WHERE current_value = '0' UNION "
        "SELECT 1 FROM system_controls WHERE name = 'a.b'",
    ],
)
def test_reads_that_could_see_any_row_ask_for_every_row(sql: str) -> None:
    assert names(sql) == {ALL_ROWS}


def test_only_keyed_tables_are_analysed() -> None:
    assert find_keys("SELECT 1 FROM users WHERE name = 'x'", {"users"}) == {}


# --- the plan ------------------------------------------------------------------------


@cache
def shipped() -> tuple[Pack, ...]:
    return tuple(load_packs(POLICIES))


def sysctl_checks() -> list[Check]:
    return [check for pack in shipped() for check in pack.checks if SC in check.tables]


def planned_names(checks: list[Check]) -> tuple[str, ...]:
    pack = Pack("p", "1", "d", "0" * 64, Path("pack.yaml"), tuple(checks))
    (table,) = [t for t in collection_plan([pack], "linux").tables if t.name == SC]
    return table.paths


def test_the_shipped_plan_names_the_kernel_parameters_the_checks_read() -> None:
    planned = planned_names(sysctl_checks())
    assert "kernel.randomize_va_space" in planned
    assert "net.ipv4.conf.default.accept_source_route" in planned  # from a VALUES table
    # Tens of rows, not the ~1,300 of a whole /proc/sys. A check whose SQL the plan cannot
    # narrow (see collector.policy.keyed) makes it every row again: rewrite that check.
    assert 10 < len(planned) < 100, "a check reads system_controls without naming its rows"


def test_the_tracked_kernel_parameters_widen_a_narrowed_plan() -> None:
    """Drift compares the security tunables against the host's baseline: a plan narrowed to
    the checks' names must still bring those, or every host would see them "removed"."""
    pack = Pack("p", "1", "d", "0" * 64, Path("pack.yaml"), tuple(sysctl_checks()))
    plan = collection_plan([pack], "linux")
    (table,) = [t for t in plan_with_tracking(plan, "linux").tables if t.name == SC]
    assert set(planned_names(sysctl_checks())) <= set(table.paths)
    assert {f"{prefix}%" for prefix in SYSCTL_PREFIXES} <= set(table.paths)
    whole = CollectionPlan("v", 300, (PlannedTable(SC),))
    (kept,) = [t for t in plan_with_tracking(whole, "linux").tables if t.name == SC]
    assert kept.paths == ()  # every row stays every row


def test_one_unconstrained_check_makes_the_plan_read_every_row() -> None:
    (check,) = [c for c in sysctl_checks() if c.id == "city.linux.aslr-enabled"]
    loose = Check(**{**check.__dict__, "id": "x.loose", "paths": {SC: (ALL_ROWS,)}})
    assert planned_names([check]) == ("kernel.randomize_va_space",)
    assert planned_names([check, loose]) == ()


def test_a_check_built_without_row_names_reads_every_row() -> None:
    (check,) = [c for c in sysctl_checks() if c.id == "city.linux.aslr-enabled"]
    assert planned_names([Check(**{**check.__dict__, "paths": {}})]) == ()


# --- an agent honouring the plan gets the same verdicts ------------------------------


def decoys(planned: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows the plan does not name, with values that would pass or fail any check that
    (wrongly) read them: near-miss names of every planned row and unrelated parameters."""
    wanted = NameFilter(planned)
    near = [f"{n}2" for n in planned] + [n.replace(".", "_", 1) for n in planned]
    near += ["net.ipv4.conf.eth0.accept_redirects", "kernel.decoy", "vm.decoy"]
    return [
        {"name": name, "subsystem": name.partition(".")[0], "current_value": value,
         "config_value": value, "oid": "", "type": "string"}
        for name in near if not wanted.matches(name)
        for value in ("0", "1", "2", "")
    ]  # fmt: skip


@cache
def empty_store() -> bytes:
    """A fact store with every table and no rows (creating one takes 0.2 s, copying none)."""
    conn = sqlite3.connect(":memory:")
    create_fact_tables(conn)
    conn.commit()
    data = conn.serialize()
    conn.close()
    return data


def evaluate(db: Path, check: Check, tables: dict[str, list[dict[str, str]]]) -> CheckResult:
    db.write_bytes(empty_store())
    conn = sqlite3.connect(db)
    with conn:
        for table, rows in tables.items():
            replace_host_rows(conn, 1, table, rows)
    conn.close()
    with Evaluator(db, [check]) as evaluator:
        (result,) = evaluator.evaluate(1, "linux", dict.fromkeys(tables))
    return result


def fixture_cases() -> list[tuple[str, str]]:
    return [(c.id, outcome) for c in sysctl_checks() for outcome in ("pass", "fail")]


@pytest.mark.parametrize(("check_id", "outcome"), fixture_cases())
def test_planned_rows_give_the_verdict_of_every_row(
    tmp_path: Path, check_id: str, outcome: str
) -> None:
    (check,) = [c for c in sysctl_checks() if c.id == check_id]
    fixture = json.loads((POLICIES / check.pack / "fixtures" / f"{check_id}.{outcome}.json")
                         .read_text())  # fmt: skip
    planned = planned_names([check])
    every = {**fixture["tables"], SC: fixture["tables"][SC] + decoys(planned)}
    wanted = NameFilter(planned)
    honoured = {**every, SC: [row for row in every[SC] if wanted.matches(row["name"])]}

    whole = evaluate(tmp_path / "every.db", check, every)
    narrowed = evaluate(tmp_path / "planned.db", check, honoured)

    assert whole.status == outcome, whole.reason
    assert (narrowed.status, narrowed.evidence) == (whole.status, whole.evidence)


def test_the_decoys_would_change_a_verdict_if_read(tmp_path: Path) -> None:
    """The decoys are not inert: a check reading every row is misled by them."""
    (check,) = [c for c in sysctl_checks() if c.id == "city.linux.aslr-enabled"]
    loose = Check(**{**check.__dict__, "query": "SELECT 1 FROM system_controls "
                     "WHERE current_value = '2' AND name LIKE 'kernel.%'"})  # fmt: skip
    fixture = json.loads((POLICIES / check.pack / "fixtures" / f"{check.id}.fail.json")
                         .read_text())  # fmt: skip
    rows = fixture["tables"][SC] + decoys(("kernel.randomize_va_space",))
    assert evaluate(tmp_path / "a.db", check, {SC: rows}).status == "fail"
    assert evaluate(tmp_path / "b.db", loose, {SC: rows}).status == "pass"
