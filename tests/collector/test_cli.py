"""``posture-collector`` commands on real SQLite files and real policy packs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from collector.cli import main

ROOT = Path(__file__).resolve().parent.parent.parent
BROKEN_PACK = """\
name: broken
version: "1"
description: a pack with mistakes
checks:
  - id: city.linux.broken
    title: Broken
    description: d
    rationale: r
    remediation: m
    severity: high
    platforms: [linux]
    frameworks: {nist_800_53r5: ["CM-6"]}
    query: SELECT 1 FROM users WHERE no_such_column = 1
"""


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def broken_policies(tmp_path: Path) -> Path:
    pack = tmp_path / "policies" / "broken"
    pack.mkdir(parents=True)
    (pack / "pack.yaml").write_text(BROKEN_PACK)
    return tmp_path / "policies"


def test_policies_check_accepts_the_shipped_packs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "policies", "check", "--policies", str(ROOT / "policies"))
    assert code == 0
    assert "city-baseline" in out and out.strip().endswith("checks")


def test_policies_check_names_file_line_and_check(
    capsys: pytest.CaptureFixture[str], broken_policies: Path
) -> None:
    code, _, err = _run(capsys, "policies", "check", "--policies", str(broken_policies))
    assert code == 1
    assert "pack.yaml:" in err and "city.linux.broken" in err
    assert "no_such_column" in err


def test_serve_refuses_to_start_on_broken_policies(broken_policies: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "collector", "serve", "--db", str(tmp_path / "c.db"),
         "--policies", str(broken_policies), "--listen", "127.0.0.1:0",
         "--tls-dir", str(tmp_path / "tls")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "invalid policy packs" in completed.stderr and "city.linux.broken" in completed.stderr


def test_enroll_secrets_are_shown_once_listed_and_revoked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    code, secret, _ = _run(capsys, "enroll-secret", "create", "finance", "--db", db)
    assert code == 0 and len(secret.strip()) >= 43  # 256 bits, base64url
    code, listing, _ = _run(capsys, "enroll-secret", "list", "--db", db)
    assert "finance" in listing and "live" in listing and secret.strip() not in listing
    assert _run(capsys, "enroll-secret", "revoke", "finance", "--db", db)[0] == 0
    assert "revoked" in _run(capsys, "enroll-secret", "list", "--db", db)[1]
    code, _, err = _run(capsys, "enroll-secret", "revoke", "finance", "--db", db)
    assert code == 2 and "no live enroll secret named 'finance'" in err


def test_unknown_host_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "host", "nobody", "--db", str(tmp_path / "c.db"))
    assert code == 2 and "no host matches 'nobody'" in err


def test_reports_render_in_every_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    code, text, _ = _run(capsys, "report", "--db", db, "--format", "json")
    report = json.loads(text)
    assert code == 0 and report["hosts"] == [] and len(report["sha256"]) == 64
    assert {pack["name"] for pack in report["packs"]} == {"city-baseline"}
    header = next(csv.reader(io.StringIO(_run(capsys, "report", "--db", db, "--format", "csv")[1])))
    assert header[:4] == ["host_id", "hostname", "hardware_uuid", "check_id"]
    output = tmp_path / "report.txt"
    assert _run(capsys, "report", "--db", db, "--output", str(output))[0] == 0
    assert output.read_text().startswith("Posture compliance report")
