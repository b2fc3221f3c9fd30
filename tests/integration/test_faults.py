"""The fault harness's short form, as CI runs it: ``python -m benchmarks.faults --quick``.

Real collector and agent processes on 127.0.0.1, kill -9 at random moments, a compressed
outage, a full disk (RLIMIT_FSIZE) and a corrupt spool; nothing the collector acknowledged
may be lost or stored twice, and every host must end where its agent is. The long form
(1,000 kills) and its last table are in docs/reliability.md. ``benchmarks`` runs from the
repository root, as documented, rather than being imported (it is not an installed package).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def agent_rows(output: str) -> dict[str, list[str]]:
    """The table's agent rows by name: sent, acknowledged, stored, lost, duplicated, gaps,
    (batches), spools, final state."""
    return {
        line.split()[0]: line.split()[1:]
        for line in output.splitlines()
        if line.strip().startswith("agent-")
    }


def assert_agents_lost_nothing(output: str) -> None:
    """Both agents' rows: nothing lost or duplicated, every final state equal, and the
    phases left their marks (gaps from the full disk and the outage, a second epoch from
    the corrupt spool)."""
    rows = agent_rows(output)
    assert set(rows) == {"agent-0", "agent-1"}, output
    for sent, acked, stored, lost, duplicated, *_, final in rows.values():
        assert (lost, duplicated, final) == ("0", "0", "equal"), output
        assert 0 < int(acked) <= int(sent) and int(stored) >= int(acked), output
    gaps = {name: int(row[6].strip("()")) for name, row in rows.items()}
    assert gaps["agent-0"] > 0, output  # the full disk made it drop intermediate states
    assert gaps["agent-1"] > 0, output  # its 8 KB spool could not hold the outage
    assert rows["agent-1"][7] == "2", output  # the corrupt spool started a second epoch


def test_kill_9_outage_full_disk_and_corrupt_spool_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", "--quick", "--seed", "5",
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, output + done.stderr[-3000:]
    assert "result: OK: 0 lost, 0 duplicated" in output, output
    assert "PROBLEM" not in output, output
    kills = next(line for line in output.splitlines() if line.startswith("kills: "))
    assert int(kills.split()[1]) >= 20, output

    assert_agents_lost_nothing(output)
    # The collector's own records agree: each (host, spool, seq) once.
    assert (tmp_path / "collector" / "collector.db").exists()
