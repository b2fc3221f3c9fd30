"""``posture-collector`` commands on real SQLite files and real policy packs."""

from __future__ import annotations

import csv
import hashlib
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
    code, text, err = _run(capsys, "report", "--db", db, "--format", "json")
    report = json.loads(text)
    assert code == 0 and report["hosts"] == [] and len(report["content_sha256"]) == 64
    assert "city-baseline" in {pack["name"] for pack in report["packs"]}
    assert f"report sha256 {hashlib.sha256(text.encode()).hexdigest()}" in err
    header = next(csv.reader(io.StringIO(_run(capsys, "report", "--db", db, "--format", "csv")[1])))
    assert header[:5] == ["host_id", "hostname", "hardware_uuid", "check_id", "policy"]
    output = tmp_path / "report.txt"
    assert _run(capsys, "report", "--db", db, "--output", str(output))[0] == 0
    assert output.read_text().startswith("Posture compliance report")


def test_a_report_file_gets_a_sidecar_digest_and_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    output = tmp_path / "cjis.html"
    code, _, err = _run(
        capsys, "report", "--db", db, "--framework", "cjis", "--format", "html",
        "--output", str(output), "--user", "auditor",
    )  # fmt: skip
    assert code == 0
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    assert (tmp_path / "cjis.html.sha256").read_text() == f"{digest}  cjis.html\n"
    assert f"report sha256 {digest}" in err
    code, out, _ = _run(capsys, "verify", str(output), "--db", db)
    assert code == 0 and "by auditor, html" in out and '"framework": "cjis"' in out
    output.write_bytes(output.read_bytes().replace(b"</body>", b"<p>edited</p></body>"))
    code, _, err = _run(capsys, "verify", str(output), "--db", db)
    assert code == 1 and "NOT issued by this collector, or altered" in err


def test_report_usage_errors_are_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    code, _, err = _run(capsys, "report", "--db", db, "--format", "pdf")
    assert code == 2 and "needs --output" in err
    code, _, err = _run(capsys, "report", "--db", db, "--as-of", "last tuesday")
    assert code == 2 and "not an ISO date" in err
    code, _, err = _run(capsys, "report", "--db", db, "--group", "Police")
    assert code == 2 and "no group named 'Police'" in err


def test_groups_come_from_enroll_secrets_and_hostname_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    assert _run(capsys, "enroll-secret", "create", "pd", "--group", "Police", "--db", db)[0] == 0
    assert "group Police" in _run(capsys, "enroll-secret", "list", "--db", db)[1]
    code, out, _ = _run(capsys, "group", "rule", "add", "Finance", "--hostname", "fin-*",
                        "--db", db, "--user", "alice")  # fmt: skip
    assert code == 0 and "rule 1" in out
    listing = _run(capsys, "group", "rule", "list", "--db", db)[1]
    assert "Finance" in listing and "'fin-*'" in listing and "by alice" in listing
    groups = json.loads(_run(capsys, "group", "list", "--db", db, "--format", "json")[1])
    assert [(g["group"], g["hosts"]) for g in groups] == [("Finance", 0), ("Police", 0)]
    assert _run(capsys, "group", "rule", "remove", "1", "--db", db, "--user", "alice")[0] == 0
    code, _, err = _run(capsys, "group", "rule", "remove", "1", "--db", db, "--user", "alice")
    assert code == 2 and "no live group rule 1" in err


def test_waivers_need_a_second_person_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    check = "city.linux.ssh-root-login-disabled"
    code, out, _ = _run(
        capsys, "waiver", "create", "--check", check, "--fleet", "--justification",
        "jump host needs it", "--expires", "2099-01-01", "--ticket", "CHG-9", "--db", db,
        "--user", "bob",
    )  # fmt: skip
    assert code == 0 and "waiver 1 requested" in out
    code, _, err = _run(capsys, "waiver", "approve", "1", "--db", db, "--user", "bob")
    assert code == 2 and "another person must approve it" in err
    code, out, _ = _run(capsys, "waiver", "approve", "1", "--db", db, "--user", "carol")
    assert code == 0 and "effective" in out and "approved by carol" in out
    (listed,) = json.loads(_run(capsys, "waiver", "list", "--db", db, "--format", "json")[1])
    assert (listed["ticket"], listed["approved_by"], listed["state"]) == (
        "CHG-9",
        "carol",
        "effective",
    )
    code, out, _ = _run(capsys, "waiver", "revoke", "1", "--reason", "fixed", "--db", db,
                        "--user", "dave")  # fmt: skip
    assert code == 0 and "revoked" in out


def test_drift_and_history_commands_run_on_an_empty_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    assert (
        json.loads(_run(capsys, "drift", "--db", db, "--format", "json", "--since", "7d")[1]) == []
    )
    code, out, _ = _run(capsys, "drift", "--db", db, "--format", "csv", "--kind", "config")
    assert code == 0 and out.startswith("id,at,kind,type,host_id")
    code, out, _ = _run(capsys, "history", "compact", "--keep-days", "30", "--db", db)
    assert code == 0 and "compacted" in out
    code, _, err = _run(capsys, "baseline", "approve", "nobody", "--db", db, "--user", "alice")
    assert code == 2 and "no host matches 'nobody'" in err
