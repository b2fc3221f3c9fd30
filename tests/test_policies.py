"""Every check of every pack under policies/ proves itself on its pass and fail fixtures.

Each fixture is loaded into a SQLite fact store and the check is evaluated by the real
evaluator, exactly as the collector would for a host that reported those tables. The other
tests keep the packs honest: both fixtures for every check, no orphan fixtures, fixtures of
a platform the check targets, complete metadata and framework mappings, packs that load
cleanly, and every Linux check evaluating on this machine's own facts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.collect import collect
from agent.plan import CollectionPlan as AgentPlan
from agent.sources import default_sources
from collector.policy.evaluate import Evaluator
from collector.policy.loader import load_packs
from collector.policy.model import Check, CheckResult, Pack, Status
from collector.policy.plan import collection_plan
from collector.policy.reference import render_reference
from collector.store.facts import create_fact_tables, replace_host_rows
from protos.posture.v1.tables import TABLES, columns_for

POLICIES = Path(__file__).resolve().parent.parent / "policies"
HOST_ID = 1
OUTCOMES = ("pass", "fail")
TEXT_FIELDS = ("title", "description", "rationale", "remediation")
FIXTURE_KEYS = {"platform", "tables"}
#: Optional fixture key: the evaluation time (ISO 8601), what posture_now() returns.
NOW_KEY = "now"

#: Frameworks every check of a pack must map to. The city packs answer to the city's CJIS
#: auditors; a CIS pack's checks must each name their benchmark section, and map to CJIS
#: only where a CJIS requirement applies.
REQUIRED_FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "city-": ("cis_controls_v8", "nist_800_53r5", "cjis"),
    "cis-": ("cis", "cis_controls_v8", "nist_800_53r5"),
}

#: Tables whose probe cannot run in this test container, with the error each reports and
#: why. Checks reading them may give ``error`` here (never pass or fail by accident); on a
#: machine where the probe works they must not.
UNAVAILABLE_HERE: dict[str, tuple[str, str]] = {
    "systemd_units": (
        "systemd is not running",
        "the container's PID 1 is not systemd, so no unit state can be read",
    ),
    "kernel_modules": (
        "no loadable module support",
        "the container's kernel has no loadable-module support (/proc/modules is absent)",
    ),
}
#: Run without root (a developer's laptop, some CI runners), root-only files cannot be read.
if os.geteuid() != 0:
    UNAVAILABLE_HERE |= {
        table: ("the agent must run as root", "the tests run unprivileged")
        for table in ("shadow", "sudoers")
    }


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


def _fixture_time(fixture: dict[str, Any]) -> float | None:
    if NOW_KEY not in fixture:
        return None
    return datetime.fromisoformat(str(fixture[NOW_KEY]).replace("Z", "+00:00")).timestamp()


def _store(db_path: Path, tables: dict[str, list[dict[str, str]]]) -> None:
    conn = sqlite3.connect(db_path)
    try:
        for table, rows in tables.items():
            replace_host_rows(conn, HOST_ID, table, rows)
        conn.commit()
    finally:
        conn.close()


def _evaluate(
    db_path: Path,
    checks: list[Check],
    platform: str,
    tables: dict[str, str | None],
    now: float | None,
) -> list[CheckResult]:
    with Evaluator(db_path, checks, clock=time.time if now is None else lambda: now) as evaluator:
        return evaluator.evaluate(HOST_ID, platform, tables)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fact store with every table and no rows, copied by each test: creating the schema
    takes a fifth of a second, copying it a millisecond."""
    path = tmp_path_factory.mktemp("store") / "facts.db"
    conn = sqlite3.connect(path)
    try:
        create_fact_tables(conn)
        conn.commit()
    finally:
        conn.close()
    return path


def test_policy_packs_exist() -> None:
    assert CHECKS, f"no checks found under {POLICIES}"


def test_load_packs_accepts_every_pack() -> None:
    packs = load_packs(POLICIES)
    names = [pack.name for pack in packs]
    assert len(names) == len(set(names)), f"duplicate pack names: {names}"
    assert all(pack.name == pack.path.parent.name for pack in packs), "name the directory"
    loaded = sorted(check.id for pack in packs for check in pack.checks)
    assert loaded == sorted(check_id for _, check_id in CHECKS)
    assert len(loaded) == len(set(loaded)), "a check id is used twice"


@pytest.mark.parametrize(
    ("pack", "check_id", "expected"), CASES, ids=[f"{c}.{o}" for _, c, o in CASES]
)
def test_check_on_fixture(
    tmp_path: Path, empty_store: Path, pack: str, check_id: str, expected: str
) -> None:
    check = _check(check_id)
    fixture = _fixture(pack, check_id, expected)
    platform: str = fixture["platform"]
    tables: dict[str, list[dict[str, str]]] = fixture["tables"]
    assert platform in check.platforms, "the fixture's platform is not one the check targets"
    assert set(tables) == set(check.tables), (
        f"the fixture must list exactly the tables the check reads: {sorted(check.tables)}"
    )
    db_path = tmp_path / "facts.db"
    shutil.copyfile(empty_store, db_path)
    _store(db_path, tables)

    results = _evaluate(db_path, [check], platform, dict.fromkeys(tables), _fixture_time(fixture))

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
        assert FIXTURE_KEYS <= set(fixture) <= FIXTURE_KEYS | {NOW_KEY}
        if NOW_KEY in fixture:
            assert _fixture_time(fixture), f"{outcome}: '{NOW_KEY}' must be an ISO 8601 time"
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


def _required_frameworks(pack: str) -> tuple[str, ...]:
    prefixes = [prefix for prefix in REQUIRED_FRAMEWORKS if pack.startswith(prefix)]
    assert prefixes, f"pack {pack}: add its required frameworks to REQUIRED_FRAMEWORKS"
    return REQUIRED_FRAMEWORKS[prefixes[0]]


@pytest.mark.parametrize(("pack", "check_id"), CHECKS, ids=[c for _, c in CHECKS])
def test_check_metadata_is_complete(pack: str, check_id: str) -> None:
    check = _check(check_id)
    for name in TEXT_FIELDS:
        assert str(getattr(check, name)).strip(), f"empty {name}"
    for framework in _required_frameworks(pack):
        refs = check.frameworks.get(framework, ())
        assert refs, f"no {framework} mapping"
        assert all(ref.control.strip() for ref in refs), f"blank {framework} control"
    for ref in check.frameworks.get("cjis", ()):
        assert ref.document, "a CJIS reference must name the policy version"
    for ref in check.frameworks.get("cis", ()):
        assert ref.document, "a CIS reference must name the benchmark"


# --- this machine's real facts ------------------------------------------------------------


@pytest.fixture(scope="module")
def facts_of_this_machine() -> dict[str, tuple[list[dict[str, str]], str]]:
    """This Linux machine's facts for the packs' Linux plan: table -> (rows, error)."""
    plan = collection_plan(_packs(), "linux")
    collection = collect(AgentPlan.from_dict(plan.to_dict()), default_sources())
    return {name: (result.rows, result.error) for name, result in collection.tables.items()}


def test_every_linux_check_evaluates_on_this_machine(
    tmp_path: Path,
    empty_store: Path,
    facts_of_this_machine: dict[str, tuple[list[dict[str, str]], str]],
) -> None:
    """No check errs here for a missing table, an unknown column or SQL that fails on real
    rows; only the probes this container cannot run (UNAVAILABLE_HERE) may give errors."""
    unexplained = {
        table: error
        for table, (_, error) in facts_of_this_machine.items()
        if error and not (table in UNAVAILABLE_HERE and UNAVAILABLE_HERE[table][0] in error)
    }
    assert unexplained == {}, "tables this machine should be able to report"
    db_path = tmp_path / "facts.db"
    shutil.copyfile(empty_store, db_path)
    _store(db_path, {table: rows for table, (rows, _) in facts_of_this_machine.items()})
    status = {table: (error or None) for table, (_, error) in facts_of_this_machine.items()}
    checks = [check for pack in _packs() for check in pack.checks if "linux" in check.platforms]

    results = _evaluate(db_path, checks, "linux", status, None)

    assert len(results) == len(checks)
    for result in results:
        assert result.status is not Status.UNKNOWN, f"{result.check_id}: {result.reason}"
        if result.status is Status.ERROR:
            failed_tables = set(re.findall(r"table (\w+): ", result.reason))
            assert failed_tables and failed_tables <= UNAVAILABLE_HERE.keys(), (
                f"{result.check_id}: {result.reason}"
            )
        elif result.status in (Status.PASS, Status.FAIL):
            assert result.reason == "", f"{result.check_id}: {result.reason}"


# --- the SSH parser reads every line that can set a keyword --------------------------------

SSH_DROP_IN = "/etc/ssh/sshd_config.d/50-local.conf"


def _passing_host_with_line(
    tmp_path: Path, empty_store: Path, pack: str, check_id: str, path: str, line: str
) -> CheckResult:
    """The check's result on its pass fixture with one more line of ``path``."""
    tables: dict[str, list[dict[str, str]]] = dict(_fixture(pack, check_id, "pass")["tables"])
    tables["file_lines"] = [*tables["file_lines"], {"path": path, "line": line}]
    db_path = tmp_path / "facts.db"
    shutil.copyfile(empty_store, db_path)
    _store(db_path, tables)
    (result,) = _evaluate(db_path, [_check(check_id)], "linux", dict.fromkeys(tables), None)
    return result


@pytest.mark.parametrize(
    ("pack", "check_id", "line"),
    [
        ("city-baseline", "city.linux.ssh-root-login-disabled", 'Permit"Root"Login yes'),
        ("city-baseline", "city.linux.ssh-max-auth-tries", "MaxAuthTries\t10"),
        ("cis-linux-l1", "cis.linux.sshd-ignore-rhosts", "ignorerhosts=no"),
        (
            "cis-linux-l1",
            "cis.linux.sshd-hostbased-auth-disabled",
            '  HostbasedAuthentication "yes"',
        ),
    ],
)
def test_ssh_checks_see_every_spelling_of_a_setting(
    tmp_path: Path, empty_store: Path, pack: str, check_id: str, line: str
) -> None:
    """The SSH checks parse only the lines that can set their keywords (see the packs'
    "Cost" note); a setting quoted, indented, lower-case, or separated by a tab or "=", in
    an included drop-in, must still turn the passing host into a failing one."""
    result = _passing_host_with_line(tmp_path, empty_store, pack, check_id, SSH_DROP_IN, line)

    assert result.status is Status.FAIL, result.reason
    if '"' not in line:  # the evidence finds lines by their keyword as written
        assert {"path": SSH_DROP_IN, "line": line.strip()} in result.evidence


@pytest.mark.parametrize(
    ("check_id", "line", "outcome"),
    [
        ("cis.linux.password-max-age", "\tPASS_MAX_DAYS\t99999", Status.FAIL),
        ("cis.linux.password-warn-age", "  PASS_WARN_AGE 0", Status.FAIL),
        ("cis.linux.password-hashing", " ENCRYPT_METHOD MD5", Status.FAIL),
        # login.defs keywords are case-sensitive (shadow's getdef): not settings
        ("cis.linux.password-max-age", "pass_max_days 99999", Status.PASS),
        ("cis.linux.password-warn-age", "pass_warn_age 0", Status.PASS),
        ("cis.linux.password-hashing", "encrypt_method MD5", Status.PASS),
    ],
)
def test_login_defs_checks_see_indented_settings(
    tmp_path: Path, empty_store: Path, check_id: str, line: str, outcome: Status
) -> None:
    """The login.defs checks seek lines starting with their keyword and indented lines
    only (the CIS pack's "Cost" note); an indented setting must still count."""
    result = _passing_host_with_line(
        tmp_path, empty_store, "cis-linux-l1", check_id, "/etc/login.defs", line
    )

    assert result.status is outcome, result.reason


# --- the check reference for auditors ---------------------------------------------------

REFERENCE = POLICIES.parent / "docs" / "policy-reference.md"
REGENERATE = "run python -m collector.policy.reference > docs/policy-reference.md"


def test_the_committed_check_reference_is_fresh() -> None:
    assert REFERENCE.exists(), f"{REFERENCE} is missing: {REGENERATE}"
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(_packs()), (
        f"{REFERENCE.name} is stale: {REGENERATE}"
    )


def test_the_reference_names_every_check_with_its_frameworks_once() -> None:
    page = render_reference(_packs())
    for pack in _packs():
        assert f"SHA-256 of `pack.yaml`: `{pack.sha256}`" in page
        for check in pack.checks:
            assert page.count(f'<a id="{check.id}"></a>') == 1, check.id
            section = page.split(f'<a id="{check.id}"></a>', 1)[1].split("<a id=", 1)[0]
            for refs in check.frameworks.values():
                assert all(ref.control in section for ref in refs), check.id


def test_the_reference_keeps_prose_literal_in_markdown(tmp_path: Path) -> None:
    pack_dir = tmp_path / "p"
    (pack_dir / "fixtures").mkdir(parents=True)
    (pack_dir / "pack.yaml").write_text(
        "name: p\nversion: '1'\ndescription: A pack.\nchecks:\n"
        "  - id: p.linux.one\n    title: 'Pipes | and <tags>'\n"
        "    description: 'Reads /etc/modprobe.d/*.conf and _private files, PASS_MAX_DAYS.'\n"
        "    rationale: r\n    remediation: 'Run `a | b` as <user>.'\n    severity: low\n"
        "    platforms: [linux, darwin]\n    frameworks: {nist_800_53r5: [CM-6]}\n"
        "    query: SELECT 1\n",
        encoding="utf-8",
    )
    page = render_reference(load_packs(tmp_path))
    assert "/etc/modprobe.d/\\*.conf and \\_private files, PASS_MAX_DAYS." in page
    assert "Run `a | b` as \\<user\\>." in page  # code spans stay as written
    assert "| low | Pipes \\| and \\<tags\\> |" in page
    assert page.count("#### `p.linux.one`") == 1, "a multi-platform check is described once"
    assert "- Platforms: macOS, Linux" in page
    assert render_reference(load_packs(tmp_path)) == page


def test_the_reference_command_prints_the_page_or_the_packs_problems(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "collector.policy.reference", "--policies"]
    printed = subprocess.run(
        [*command, str(POLICIES)], capture_output=True, text=True, check=True, timeout=120
    )
    assert printed.stdout == render_reference(_packs())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "pack.yaml").write_text("name: broken\n", encoding="utf-8")
    refused = subprocess.run(
        [*command, str(tmp_path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "pack.yaml" in refused.stderr and "version" in refused.stderr
