"""Evaluating checks against a real on-disk fact store: statuses, isolation, the sandbox."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from collector.policy.evaluate import FACT_PREFIX, Evaluator
from collector.policy.model import Check, CheckResult, Severity, Status
from collector.store.facts import create_fact_tables, fact_table_name, replace_host_rows

LINUX = "linux"
ROOT_ONLY = "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM users WHERE uid = 0 AND username != 'root')"


def make_check(
    check_id: str,
    query: str,
    tables: Iterable[str] = ("users",),
    *,
    platforms: Iterable[str] = (LINUX,),
    applies: str | None = None,
    evidence: str | None = None,
) -> Check:
    """A check built directly, as the loader would (and as one that bypassed it)."""
    return Check(
        id=check_id,
        title=check_id,
        description="d",
        rationale="r",
        remediation="m",
        severity=Severity.HIGH,
        platforms=frozenset(platforms),
        frameworks={},
        query=query,
        applies=applies,
        evidence=evidence,
        tables=frozenset(tables),
        paths={},
        pack="test",
        source="pack.yaml",
        line=1,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The collector's writer connection: WAL, fact tables, and a private table."""
    conn = sqlite3.connect(tmp_path / "posture.db")
    conn.execute("PRAGMA journal_mode=WAL")
    create_fact_tables(conn)
    conn.execute("CREATE TABLE hosts (id INTEGER PRIMARY KEY, uid INTEGER, secret TEXT)")
    conn.execute("INSERT INTO hosts VALUES (1, 0, 'credential-hash')")
    put(conn, 1, "users", [{"uid": "0", "username": "root"}, {"uid": "1000", "username": "ana"}])
    put(conn, 2, "users", [{"uid": "0", "username": "root"}, {"uid": "0", "username": "toor"}])
    put(conn, 1, "processes", [{"pid": "1", "name": "systemd"}, {"pid": "2", "name": "sshd"}])
    yield conn
    conn.close()


def put(conn: sqlite3.Connection, host_id: int, table: str, rows: list[dict[str, str]]) -> None:
    replace_host_rows(conn, host_id, table, rows)
    conn.commit()


def evaluate(
    db: Path,
    checks: list[Check],
    host_id: int = 1,
    status: Mapping[str, str | None] | None = None,
    **options: int,
) -> dict[str, CheckResult]:
    with Evaluator(db, checks, **options) as evaluator:
        results = evaluator.evaluate(host_id, LINUX, status or {"users": None, "processes": None})
    return {result.check_id: result for result in results}


def test_each_status_and_its_reason(store: sqlite3.Connection, tmp_path: Path) -> None:
    telnet = "SELECT 1 FROM processes WHERE name = 'telnetd'"
    checks = [
        make_check("pass", "SELECT 1 FROM users WHERE username = 'root' AND uid = 0"),
        make_check("fail", "SELECT 1 FROM users WHERE username = 'nobody'"),
        make_check("windows-only", "SELECT 1", (), platforms=["windows"]),  # out of scope
        make_check("no-telnet", "SELECT 1", ["processes"], applies=telnet),
        make_check("no-facts", "SELECT 1 FROM deb_packages", ["deb_packages"]),
        make_check("probe-failed", "SELECT 1 FROM shadow", ["shadow"]),
        make_check("runtime-error", "SELECT json_extract(username, '$.a') FROM users"),
    ]
    status = {"users": None, "processes": None, "shadow": "permission denied"}
    results = evaluate(tmp_path / "posture.db", checks, status=status)
    assert {key: (r.status, r.reason) for key, r in results.items()} == {
        "pass": (Status.PASS, ""),
        "fail": (Status.FAIL, ""),
        "no-telnet": (Status.NOTAPPLICABLE, "applies query returned no rows"),
        "no-facts": (Status.UNKNOWN, "no facts for table deb_packages yet"),
        "probe-failed": (Status.ERROR, "table shadow: permission denied"),
        "runtime-error": (Status.ERROR, "query failed: malformed JSON"),
    }


def test_a_shared_applies_statement_answers_for_each_host_and_snapshot(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    """Checks naming one ``applies`` statement share its verdict within an evaluation,
    never across hosts or evaluations."""
    sshd = "SELECT 1 FROM processes WHERE name = 'sshd'"
    checks = [make_check(f"ssh-{n}", "SELECT 1", ["processes"], applies=sshd) for n in range(3)]
    status = {"users": None, "processes": None}
    with Evaluator(tmp_path / "posture.db", checks) as evaluator:
        statuses = {r.status for r in evaluator.evaluate(1, LINUX, status)}
        assert statuses == {Status.PASS}
        assert {r.status for r in evaluator.evaluate(2, LINUX, status)} == {Status.NOTAPPLICABLE}
        put(store, 1, "processes", [{"pid": "1", "name": "systemd"}])
        assert {r.status for r in evaluator.evaluate(1, LINUX, status)} == {Status.NOTAPPLICABLE}


def test_results_come_in_check_order(store: sqlite3.Connection, tmp_path: Path) -> None:
    checks = [make_check(f"c{i}", "SELECT 1") for i in (3, 1, 2)]
    results = Evaluator(tmp_path / "posture.db", checks).evaluate(1, LINUX, {"users": None})
    assert [result.check_id for result in results] == ["c3", "c1", "c2"]


def test_evidence_is_capped_at_50_rows_of_strings(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    put(store, 1, "processes", [{"pid": str(pid), "name": f"p{pid}"} for pid in range(60)])
    evidence = "SELECT pid, name, cmdline FROM processes ORDER BY pid"
    checks = [make_check("many", "SELECT 1 WHERE 0", ["processes"], evidence=evidence)]
    result = evaluate(tmp_path / "posture.db", checks)["many"]
    assert result.status is Status.FAIL
    assert len(result.evidence) == 50
    assert result.evidence[7] == {"pid": "7", "name": "p7", "cmdline": ""}


def test_a_failing_evidence_query_keeps_the_verdict(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    checks = [make_check("c", "SELECT 1", evidence="SELECT json(username) FROM users")]
    result = evaluate(tmp_path / "posture.db", checks)["c"]
    assert (result.status, result.reason) == (Status.PASS, "evidence query failed: malformed JSON")


def test_hosts_never_see_each_others_rows(store: sqlite3.Connection, tmp_path: Path) -> None:
    evidence = "SELECT username FROM users WHERE uid = 0 ORDER BY username"
    # SQLite plans each branch of an OR on its own: the host filter must reach every one.
    toor = "SELECT 1 FROM users WHERE username IN ('toor', 'x') OR (uid = 0 AND username = 'toor')"
    checks = [
        make_check("root-only", ROOT_ONLY, evidence=evidence),
        make_check("two-users", "SELECT 1 WHERE (SELECT count(*) FROM users) = 2"),
        make_check("toor", toor),
    ]
    status: dict[str, str | None] = {"users": None}
    with Evaluator(tmp_path / "posture.db", checks) as evaluator:
        for _ in range(2):  # again, with every statement cached
            one = evaluator.evaluate(1, LINUX, status)
            two = evaluator.evaluate(2, LINUX, status)
            assert (one[0].status, one[0].evidence) == (Status.PASS, ({"username": "root"},))
            assert (two[0].status, two[0].evidence) == (
                Status.FAIL,
                ({"username": "root"}, {"username": "toor"}),
            )
            assert one[1].status is two[1].status is Status.PASS
            assert (one[2].status, two[2].status) == (Status.FAIL, Status.PASS)
            assert evaluator.evaluate(3, LINUX, status)[1].status is Status.FAIL


DENIED = [
    ("SELECT secret FROM hosts", "reading hosts is not allowed: it is not a fact table"),
    ("SELECT count(*) FROM hosts", "reads hosts outside the fact tables"),
    # SQLite skips the authorizer for a table joined only by USING: the program audit sees it.
    ("SELECT 1 FROM users JOIN hosts USING (uid)", "reads hosts outside the fact tables"),
    ("SELECT * FROM main.fact_users", "may not name fact_*"),
    ("WITH users AS (SELECT * FROM main.fact_users) SELECT 1 FROM users", "may not name fact_*"),
    ("SELECT count(*) FROM sqlite_master", "may not name fact_* or sqlite_* tables"),
    ("SELECT count(*) FROM temp.sqlite_temp_master", "may not name fact_* or sqlite_* tables"),
    ("PRAGMA table_info(users)", "PRAGMA is not allowed in policy SQL"),
    ("ATTACH 'other.db' AS other", "ATTACH is not allowed in policy SQL"),
    ("SELECT load_extension('evil.so')", "function load_extension() is not allowed"),
    ("DELETE FROM users", "cannot modify users because it is a view"),
    ("DELETE FROM hosts", "DELETE is not allowed in policy SQL"),
    ("INSERT INTO hosts VALUES (9, 0, 'x')", "INSERT is not allowed in policy SQL"),
    ("UPDATE hosts SET secret = ''", "UPDATE is not allowed in policy SQL"),
]


@pytest.mark.parametrize(("sql", "reason"), DENIED, ids=[sql for sql, _ in DENIED])
def test_the_sandbox_refuses_anything_but_reading_facts(
    store: sqlite3.Connection, tmp_path: Path, sql: str, reason: str
) -> None:
    checks = [make_check("evil", sql), make_check("fine", ROOT_ONLY)]
    results = evaluate(tmp_path / "posture.db", checks)
    assert results["evil"].status is Status.ERROR
    assert reason in results["evil"].reason
    assert results["fine"].status is Status.PASS
    assert store.execute("SELECT count(*), max(secret) FROM hosts").fetchone() == (
        1,
        "credential-hash",
    )
    assert store.execute(f"SELECT count(*) FROM {fact_table_name('users')}").fetchone() == (4,)


def test_a_runaway_query_is_aborted_and_the_next_check_runs(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT 1 FROM n"
    forever += " WHERE x < 0"
    checks = [make_check("forever", forever, ()), make_check("fine", ROOT_ONLY)]
    results = evaluate(tmp_path / "posture.db", checks, max_vm_steps=200_000)
    assert results["forever"].status is Status.ERROR
    assert results["forever"].reason == ("query aborted after 200000 SQLite steps (runaway query?)")
    assert results["fine"].status is Status.PASS


def test_evaluation_reads_committed_facts_while_the_collector_writes(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    checks = [make_check("root-only", ROOT_ONLY)]
    with Evaluator(tmp_path / "posture.db", checks) as evaluator:
        store.execute("BEGIN IMMEDIATE")
        replace_host_rows(store, 1, "users", [{"uid": "0", "username": "toor"}])
        assert evaluator.evaluate(1, LINUX, {"users": None})[0].status is Status.PASS
        store.commit()
        assert evaluator.evaluate(1, LINUX, {"users": None})[0].status is Status.FAIL


def test_one_evaluation_reads_one_snapshot(store: sqlite3.Connection, tmp_path: Path) -> None:
    class WriteBetweenChecks(Evaluator):
        """Commits a change to the host's users right after the first check has run."""

        def _verdict(self, check: Check) -> CheckResult:
            result = super()._verdict(check)
            if check.id == "first":
                put(store, 1, "users", [{"uid": "0", "username": "toor"}])
            return result

    checks = [make_check("first", ROOT_ONLY), make_check("second", ROOT_ONLY)]
    with WriteBetweenChecks(tmp_path / "posture.db", checks) as evaluator:
        results = evaluator.evaluate(1, LINUX, {"users": None})
        assert [result.status for result in results] == [Status.PASS, Status.PASS]
        assert evaluator.evaluate(1, LINUX, {"users": None})[1].status is Status.FAIL


def test_only_tables_limits_evaluation_to_checks_reading_them(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    checks = [
        make_check("users", ROOT_ONLY),
        make_check("processes", "SELECT 1 FROM processes", ["processes"]),
        make_check("both", "SELECT 1 FROM users, processes", ["users", "processes"]),
    ]
    status: dict[str, str | None] = {"users": None, "processes": None}
    with Evaluator(tmp_path / "posture.db", checks) as evaluator:
        changed = evaluator.evaluate(1, LINUX, status, only_tables={"processes"})
        assert [result.check_id for result in changed] == ["processes", "both"]
        assert evaluator.evaluate(1, LINUX, status, only_tables=()) == []


def test_fleets_disk_encryption_policy_runs_unmodified(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    fleet = (
        "SELECT 1 FROM mounts m, disk_encryption d WHERE m.device_alias = d.name AND "
        "d.encrypted = 1 AND m.path = '/';"
    )
    put(store, 1, "mounts", [{"path": "/", "device_alias": "/dev/dm-0"}])
    put(store, 1, "disk_encryption", [{"name": "/dev/dm-0", "encrypted": "1"}])
    put(store, 2, "mounts", [{"path": "/", "device_alias": "/dev/sda1"}])
    put(store, 2, "disk_encryption", [{"name": "/dev/sda1", "encrypted": "0"}])
    checks = [make_check("fde", fleet, ["mounts", "disk_encryption"])]
    status: dict[str, str | None] = {"mounts": None, "disk_encryption": None}
    with Evaluator(tmp_path / "posture.db", checks) as evaluator:
        assert evaluator.evaluate(1, LINUX, status)[0].status is Status.PASS
        assert evaluator.evaluate(2, LINUX, status)[0].status is Status.FAIL


@pytest.mark.parametrize(
    "condition",
    [
        "split(version, '.', 0) = '12' AND split('a, b,,c', ',', 2) = 'c'",
        r"regex_match(version, '^(\d+)\.(\d+)', 2) = '5'",
        "regex_match(version, 'x(y)', 1) IS NULL",
        "regex_split(codename, '[-_]+', 1) = 'worm'",
        "name REGEXP '^Deb' AND NOT (name REGEXP '^Ubu')",
        "concat(name, ' ', version) = 'Debian 12.5'",
        "concat_ws('-', major, NULL, minor) = '12-5'",
    ],
)
def test_osquery_sql_functions(store: sqlite3.Connection, tmp_path: Path, condition: str) -> None:
    row = {
        "name": "Debian",
        "version": "12.5",
        "major": "12",
        "minor": "5",
        "codename": "book_worm",
    }
    put(store, 1, "os_version", [row])
    checks = [make_check("f", f"SELECT 1 FROM os_version WHERE {condition}", ["os_version"])]
    assert evaluate(tmp_path / "posture.db", checks, status={"os_version": None})["f"].status is (
        Status.PASS
    )


def test_views_read_the_tables_the_store_writes() -> None:
    assert fact_table_name("users") == FACT_PREFIX + "users"


def test_posture_now_is_the_evaluations_clock(store: sqlite3.Connection, tmp_path: Path) -> None:
    """One clock reading per evaluation: the caller's clock, or the wall clock."""
    put(store, 1, "patches", [{"hotfix_id": "KB1", "install_date": "1795000000"}])
    recent = "SELECT 1 FROM patches WHERE CAST(install_date AS INTEGER) >= posture_now() - 86400"
    checks = [make_check("recent", recent, ["patches"], evidence="SELECT posture_now() AS now")]
    status: dict[str, str | None] = {"patches": None}
    readings = iter([1795000000 + 86400, 1795000000 + 7 * 86400])
    with Evaluator(tmp_path / "posture.db", checks, clock=lambda: next(readings)) as evaluator:
        (day_after,) = evaluator.evaluate(1, LINUX, status)
        (week_after,) = evaluator.evaluate(1, LINUX, status)
    assert (day_after.status, day_after.evidence) == (Status.PASS, ({"now": "1795086400"},))
    assert (week_after.status, week_after.evidence) == (Status.FAIL, ({"now": "1795604800"},))
    before = time.time()
    (today,) = evaluate(tmp_path / "posture.db", checks, status=status).values()
    assert int(before) <= int(today.evidence[0]["now"]) <= time.time()  # the wall clock


def test_evidence_keeps_each_statements_column_names_across_hosts(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    # Column names are read once per statement and reused: two statements with different
    # names, evaluated for two hosts (the second time from the cache), keep their own.
    checks = [
        make_check("users", "SELECT 1", evidence="SELECT username AS who FROM users WHERE uid = 0"),
        make_check(
            "procs",
            "SELECT 1 FROM processes WHERE name = 'sshd'",
            ["processes"],
            evidence="SELECT name AS program, pid FROM processes WHERE name = 'sshd'",
        ),
    ]
    status: dict[str, str | None] = {"users": None, "processes": None}
    with Evaluator(tmp_path / "posture.db", checks) as evaluator:
        for _ in range(2):
            one = {r.check_id: r for r in evaluator.evaluate(1, LINUX, status)}
            two = {r.check_id: r for r in evaluator.evaluate(2, LINUX, status)}
            assert one["users"].evidence == ({"who": "root"},)
            assert two["users"].evidence == ({"who": "root"}, {"who": "toor"})
            assert (one["procs"].status, one["procs"].evidence) == (
                Status.PASS,
                ({"program": "sshd", "pid": "2"},),
            )
            assert (two["procs"].status, two["procs"].evidence) == (Status.FAIL, ())


def test_like_on_paths_stays_case_insensitive_as_in_osquery(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    # osquery's LIKE ignores ASCII case; the evaluator must not change that (no
    # case_sensitive_like), whatever indexes the store offers for prefix patterns.
    put(store, 1, "file_lines", [{"path": "/etc/SSH/sshd_config.d/10-City.conf", "line": "x"}])
    query = (
        "SELECT 1 FROM file_lines"
        " WHERE path = '/etc/ssh/sshd_config' OR path LIKE '/etc/ssh/sshd_config.d/%.conf'"
    )
    checks = [make_check("like", query, ["file_lines"])]
    result = evaluate(tmp_path / "posture.db", checks, status={"file_lines": None})["like"]
    assert result.status is Status.PASS


def test_a_runaway_query_filling_a_scratch_table_is_aborted(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    # Scratch tables live in memory (module docstring): the step budget, not a temporary
    # file's size, is what stops a statement that keeps feeding rows to a sort.
    forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n)"
    forever += " SELECT x FROM n ORDER BY x DESC"
    checks = [make_check("sorting", forever, ()), make_check("fine", ROOT_ONLY)]
    results = evaluate(tmp_path / "posture.db", checks, max_vm_steps=200_000)
    assert results["sorting"].status is Status.ERROR
    assert results["sorting"].reason == "query aborted after 200000 SQLite steps (runaway query?)"
    assert results["fine"].status is Status.PASS


def test_checks_that_build_scratch_tables_give_the_same_answers(
    store: sqlite3.Connection, tmp_path: Path
) -> None:
    # A CTE read twice is materialized, GROUP BY and ORDER BY sort, IN (SELECT) builds a
    # lookup: each makes a scratch table, on host 2 as on host 1.
    twice = (
        "WITH admins AS (SELECT username FROM users WHERE uid = 0)"
        " SELECT 1 WHERE (SELECT count(*) FROM admins) = 1"
        " AND EXISTS (SELECT 1 FROM admins WHERE username = 'root')"
    )
    grouped = "SELECT 1 WHERE NOT EXISTS (SELECT uid FROM users GROUP BY uid HAVING count(*) > 1)"
    looked_up = "SELECT 1 FROM users WHERE uid IN (SELECT uid FROM users WHERE username = 'root')"
    evidence = "SELECT username FROM users ORDER BY username DESC"
    checks = [
        make_check("twice", twice, evidence=evidence),
        make_check("grouped", grouped),
        make_check("looked-up", looked_up),
    ]
    db = tmp_path / "posture.db"
    one, two = evaluate(db, checks, host_id=1), evaluate(db, checks, host_id=2)
    assert [r.status for r in one.values()] == [Status.PASS, Status.PASS, Status.PASS]
    assert [r.status for r in two.values()] == [Status.FAIL, Status.FAIL, Status.PASS]
    assert one["twice"].evidence == ({"username": "root"}, {"username": "ana"})
    assert two["twice"].evidence == ({"username": "toor"}, {"username": "root"})
