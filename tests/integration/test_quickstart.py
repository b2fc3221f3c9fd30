"""The README's first command: ``posture-collector quickstart`` runs the whole product."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from collector.access import Role
from collector.accounts import AccessControl
from collector.store import SqliteStore


def test_quickstart_scores_this_machine_and_serves_the_dashboard(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "collector", "quickstart", "--dir", str(tmp_path / "q"),
        "--port", "0", "--http-port", "0", "--no-keep-serving",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compliance score" in done.stdout
    assert "Dashboard: http://127.0.0.1:" in done.stdout
    for suffix in ("txt", "json", "csv", "html"):
        assert (tmp_path / "q" / "reports" / f"report.{suffix}").stat().st_size > 0
    password_file = tmp_path / "q" / "admin-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert password not in done.stdout  # printed nowhere, kept in the file
    store = SqliteStore(tmp_path / "q" / "collector.db")
    try:
        user = AccessControl(store, lambda: datetime.now(UTC)).check_password("admin", password)
        assert user.role is Role.ADMIN
    finally:
        store.close()
