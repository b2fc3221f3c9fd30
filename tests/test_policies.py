"""Every check of every pack under policies/ proves itself on its pass and fail fixtures.

Each fixture is loaded into a fresh SQLite fact store and the check is evaluated by the real
evaluator, exactly as the collector would for a host that reported those tables. The other
tests keep the packs honest: both fixtures for every check, no orphan fixtures, complete
metadata and framework mappings, and packs that load cleanly.
"""

from __future__ import annotations

import json
import sqlite3
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.policy.evaluate import Evaluator
from collector.policy.loader import load_packs
from collector.policy.model import Check, Pack, Status
from collector.store.facts import create_fact_tables, replace_host_rows
from protos.posture.v1.tables import TABLES, columns_for

POLICIES = Path(__file__).resolve().parent.parent / "policies"
HOST_ID = 1
OUTCOMES = ("pass", "fail")
TEXT_FIELDS = ("title", "description", "rationale", "remediation")
REQUIRED_FRAMEWORKS = ("cis_controls_v8", "nist_800_53r5", "cjis")


def _declared_checks() -> list[tuple[str, str]]:
    """(pack directory, check id) for every check, read from the YAML itself so that the
    parametrisation does not depend on the loader these tests exercise."""
    found = []
    for pack_file in sorted(POLICIES.glob("*/pack.yaml")):
        document = yaml.safe_load(pack_file.read_text(encoding="utf-8"))
        for check in document.get("checks") or ():
            found.append((pack_file.parent.name, str(check["id"])))
    return found


CHECKS = _declared_checks()
CASES = [(pack, check_id, outcome) for pack, check_id in CHECKS for outcome in OUTCOMES]


@cache
def _packs() -> tuple[Pack, ...]:
    return tuple(load_packs(POLICIES))


def _check(check_id: str) -> Check:
    matches = [check for pack in _packs() for check in pack.checks if check.id == check_id]
    assert len(matches) == 1, f"{check_id}: loaded {len(matches)} times"
    return matches[0]


def _fixture(pack: str, check_id: str, outcome: str) -> dict[str, Any]:
    path = POLICIES / pack / "fixtures" / f"{check_id}.{outcome}.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _store(db_path: Path, tables: dict[str, list[dict[str, str]]]) -> None:
    conn = sqlite3.connect(db_path)
    try:
        create_fact_tables(conn)
        for table, rows in tables.items():
            replace_host_rows(conn, HOST_ID, table, rows)
        conn.commit()
    finally:
        conn.close()


def test_policy_packs_exist() -> None:
    assert CHECKS, f"no checks found under {POLICIES}"


def test_load_packs_accepts_every_pack() -> None:
    packs = load_packs(POLICIES)
    names = [pack.name for pack in packs]
    assert len(names) == len(set(names)), f"duplicate pack names: {names}"
    loaded = sorted(check.id for pack in packs for check in pack.checks)
    assert loaded == sorted(check_id for _, check_id in CHECKS)
    assert len(loaded) == len(set(loaded)), "a check id is used twice"


@pytest.mark.parametrize(
    ("pack", "check_id", "expected"), CASES, ids=[f"{c}.{o}" for _, c, o in CASES]
)
def test_check_on_fixture(tmp_path: Path, pack: str, check_id: str, expected: str) -> None:
    check = _check(check_id)
    fixture = _fixture(pack, check_id, expected)
    platform: str = fixture["platform"]
    tables: dict[str, list[dict[str, str]]] = fixture["tables"]
    assert platform in check.platforms
    assert set(tables) == set(check.tables), (
        f"the fixture must list exactly the tables the check reads: {sorted(check.tables)}"
    )
    db_path = tmp_path / "facts.db"
    _store(db_path, tables)

    evaluator = Evaluator(db_path, [check])
    try:
        results = evaluator.evaluate(HOST_ID, platform, dict.fromkeys(tables))
    finally:
        evaluator.close()

    assert [result.check_id for result in results] == [check_id]
    (result,) = results
    assert result.status == Status(expected), result.reason
    assert result.reason == "", f"the evidence query failed: {result.reason}"
    if check.evidence is not None and expected == "fail":
        assert result.evidence, "a failing host should show the auditor why"


@pytest.mark.parametrize(("pack", "check_id"), CHECKS, ids=[c for _, c in CHECKS])
def test_fixture_rows_match_the_catalogue(pack: str, check_id: str) -> None:
    for outcome in OUTCOMES:
        fixture = _fixture(pack, check_id, outcome)
        assert set(fixture) == {"platform", "tables"}
        for table, rows in fixture["tables"].items():
            assert table in TABLES, f"{outcome}: unknown table {table}"
            columns = set(columns_for(table, fixture["platform"]))
            for row in rows:
                assert set(row) <= columns, f"{outcome}: {table} has no {set(row) - columns}"
                assert all(isinstance(value, str) for value in row.values()), (
                    f"{outcome}: {table} values must be strings, as osquery returns them"
                )


@pytest.mark.parametrize("pack", sorted({pack for pack, _ in CHECKS}))
def test_every_check_has_both_fixtures_and_no_orphans(pack: str) -> None:
    expected = {f"{c}.{o}.json" for p, c in CHECKS if p == pack for o in OUTCOMES}
    present = {path.name for path in (POLICIES / pack / "fixtures").iterdir()}
    assert sorted(expected - present) == [], "missing fixtures"
    assert sorted(present - expected) == [], "fixtures for no check"


@pytest.mark.parametrize(("pack", "check_id"), CHECKS, ids=[c for _, c in CHECKS])
def test_check_metadata_is_complete(pack: str, check_id: str) -> None:
    check = _check(check_id)
    for name in TEXT_FIELDS:
        assert str(getattr(check, name)).strip(), f"empty {name}"
    for framework in REQUIRED_FRAMEWORKS:
        refs = check.frameworks.get(framework, ())
        assert refs, f"no {framework} mapping"
        assert all(ref.control.strip() for ref in refs), f"blank {framework} control"
    for ref in check.frameworks.get("cjis", ()):
        assert ref.document, "a CJIS reference must name the policy version"
    for ref in check.frameworks.get("cis", ()):
        assert ref.document, "a CIS reference must name the benchmark"
