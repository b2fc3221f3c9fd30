"""The fault harness pointed at a cluster, as CI runs it: ``python -m benchmarks.faults
--quick --collectors 2 --db postgresql://...``.

Two real ``posture-collector serve`` processes share one PostgreSQL database and one port
(``SO_REUSEPORT``); real agents stream to whichever the kernel picks. Kill -9 at random
moments hits agents and collectors (a killed collector stays down until the next kill, so
its agents reconnect to the survivor), then the outage, full-disk and corrupt-spool phases
run against the whole cluster. Nothing acknowledged may be lost, nothing stored or applied
twice, and every host must end where its agent is. The long form and its table are in
docs/reliability.md.

The database is a fresh one on the test session's PostgreSQL (``tests/postgres_fixture.py``),
so ``POSTURE_TEST_POSTGRES=off`` and ``POSTURE_TEST_POSTGRES_URL`` apply; skipped, with the
fixture's reason, when no PostgreSQL server can be started here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_faults import assert_agents_lost_nothing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def _faults(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_killing_collectors_of_a_cluster_loses_and_duplicates_nothing(
    postgres: Any, tmp_path: Path
) -> None:
    url = postgres.database()
    done = _faults("--quick", "--collectors", "2", "--db", url, "--seed", "5",
                   "--workdir", str(tmp_path))  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, output + done.stderr[-3000:]
    assert "result: OK: 0 lost, 0 duplicated" in output, output
    assert "PROBLEM" not in output, output

    kills = next(line for line in output.splitlines() if line.startswith("kills: "))
    assert int(kills.split()[1]) >= 20, output
    found = re.search(r"collectors (\d+); random: (.*?);", kills)
    assert found is not None, kills
    random_kills = {name: int(n) for name, n in re.findall(r"(\S+) (\d+)", found[2])}
    assert set(random_kills) <= {"collector-0", "collector-1"}, kills
    assert sum(random_kills.values()) >= 1, kills  # a collector died mid-run, the other served

    assert_agents_lost_nothing(output)

    # Both collectors ran on the one database, and nothing went to a SQLite file.
    logs = tmp_path / "collector"
    for name in ("collector-0", "collector-1"):
        assert "listening on" in (logs / f"{name}.log").read_text(), name
    assert not list(logs.glob("*.db")), "a collector wrote a SQLite file"


def test_several_collectors_on_sqlite_are_refused_with_the_reason() -> None:
    done = _faults("--quick", "--collectors", "2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs a database they can share" in done.stderr, done.stderr
    assert "SQLite serves one collector" in done.stderr, done.stderr


def test_a_private_server_and_a_database_url_together_are_refused() -> None:
    done = _faults("--quick", "--postgres", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not both" in done.stderr, done.stderr
