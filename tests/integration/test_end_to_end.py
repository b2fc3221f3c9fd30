"""Real collector and agent processes over TLS on 127.0.0.1, from enrollment to score."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from collector.policy.loader import load_packs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def _enroll(collector: Any, agent: Any) -> None:
    secret = collector.enroll_secret()
    result = agent.run(
        "enroll", "--collector", collector.address, "--ca-cert", str(collector.pki.ca_cert),
        "--secret", secret,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "enrolled as host 1" in result.stdout


def _stored_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [seq for (seq,) in conn.execute("SELECT seq FROM batches ORDER BY seq")]


def _agent_state(agent: Any) -> tuple[int, list[int]]:
    """(last seq the agent spooled, the seqs still in its spool awaiting an ack)."""
    with sqlite3.connect(agent.state_dir / "agent.db") as conn:
        last = conn.execute("SELECT value FROM state WHERE key = 'last_seq'").fetchone()
        pending = [seq for (seq,) in conn.execute("SELECT seq FROM batches ORDER BY seq")]
    return int(last[0]), pending


def test_agent_enrolls_streams_and_gets_scored(collector: Any, agent: Any) -> None:
    _enroll(collector, agent)
    once = agent.run("once")
    assert once.returncode == 0, once.stderr

    host = json.loads(collector.cli("host", "1", "--format", "json").stdout)
    linux_checks = [
        check
        for pack in load_packs(ROOT / "policies")
        for check in pack.checks
        if "linux" in check.platforms
    ]
    assert {r["check_id"] for r in host["results"]} == {c.id for c in linux_checks}
    assert host["stale"] is False
    score = host["score"]
    assert score["passed"] + score["failed"] + score["errors"] + score["notapplicable"] + score[
        "unknown"
    ] == len(linux_checks)
    assert score["percent"] is None or 0 <= score["percent"] <= 100

    with sqlite3.connect(collector.db) as conn:
        users = conn.execute("SELECT username FROM fact_users WHERE host_id = 1").fetchall()
        tables = dict(conn.execute("SELECT table_name, error FROM host_tables").fetchall())
    if "users" in tables:
        assert ("root",) in users
    assert "os_version" in tables and tables["os_version"] == ""
    assert _stored_seqs(collector.db) == [1]


def test_unchanged_second_collection_sends_no_tables(collector: Any, agent: Any) -> None:
    _enroll(collector, agent)
    assert agent.run("once").returncode == 0
    assert agent.run("once").returncode == 0
    with sqlite3.connect(collector.db) as conn:
        first, second = conn.execute("SELECT tables_changed FROM batches ORDER BY seq").fetchall()
    assert first[0] > 0
    assert second[0] < first[0]  # only tables whose digest changed travel again


def test_collector_killed_mid_run_loses_and_duplicates_nothing(collector: Any, agent: Any) -> None:
    _enroll(collector, agent)
    assert agent.run("once").returncode == 0

    collector.kill()
    for _ in range(2):
        offline = agent.run("once", "--timeout", "5")
        assert offline.returncode == 1
        assert "stay spooled" in offline.stderr
    assert _agent_state(agent) == (3, [2, 3])

    collector.start()
    assert agent.run("once").returncode == 0
    assert _stored_seqs(collector.db) == [1, 2, 3, 4]
    assert _agent_state(agent) == (4, [])


def test_daemon_survives_collector_restarts(collector: Any, agent: Any) -> None:
    collector.stop()
    collector.interval = 1
    collector.start()
    _enroll(collector, agent)
    daemon = agent.start("run")
    try:
        for _ in range(2):
            _wait_for_more_batches(collector.db, 3)
            collector.kill()
            time.sleep(1.5)
            collector.start()
        _wait_for_more_batches(collector.db, 3)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    last_seq, pending = _agent_state(agent)
    stored = _stored_seqs(collector.db)
    assert stored == sorted(set(stored)), "a batch was stored twice"
    # Every batch the agent dropped from its spool (it was acknowledged) is stored, once.
    acknowledged = set(range(1, last_seq + 1)) - set(pending)
    assert acknowledged <= set(stored)


def _wait_for_more_batches(db: Path, count: int, timeout: float = 60.0) -> None:
    target = len(_stored_seqs(db)) + count
    deadline = time.monotonic() + timeout
    while len(_stored_seqs(db)) < target:
        assert time.monotonic() < deadline, f"fewer than {target} batches stored in {timeout}s"
        time.sleep(0.2)


def test_agent_over_its_memory_cap_restarts_itself_and_loses_nothing(
    collector: Any, agent: Any
) -> None:
    collector.stop()
    collector.interval = 1
    collector.start()
    _enroll(collector, agent)
    daemon = agent.start("run", "--max-rss-mb", "1")  # every collection is over the cap
    try:
        _wait_for_more_batches(collector.db, 3)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    log = (agent.state_dir.parent / "agent.log").read_text()
    assert log.count("restarting: memory") >= 2, log[-2000:]
    last_seq, pending = _agent_state(agent)
    stored = _stored_seqs(collector.db)
    assert stored == sorted(set(stored))
    assert set(range(1, last_seq + 1)) - set(pending) <= set(stored)
