"""The README's first command: ``posture-collector quickstart`` runs the whole product."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
