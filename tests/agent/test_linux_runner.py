"""The command runner: real programs, real failures, real timeouts."""

from __future__ import annotations

import shutil
import sys
import time

import pytest

from agent import runner
from agent.runner import CommandRunner
from agent.sources.base import ProbeError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX shell utilities")


def test_returns_stdout_as_text() -> None:
    assert CommandRunner().run(["printf", "caf\\303\\251\\n"]) == "café\n"


def test_module_level_run_uses_the_default_runner() -> None:
    assert runner.run(["echo", "hello"]) == "hello\n"


def test_no_shell_interprets_the_arguments() -> None:
    assert CommandRunner().run(["echo", "$HOME; rm -rf /"]) == "$HOME; rm -rf /\n"


def test_output_is_not_translated() -> None:
    assert CommandRunner().run(["sh", "-c", "echo $LC_ALL"]) == "C.UTF-8\n"


def test_missing_program_is_a_probe_error_naming_it() -> None:
    with pytest.raises(ProbeError, match="no-such-posture-tool is not installed"):
        CommandRunner().run(["no-such-posture-tool", "--version"])


def test_non_zero_exit_includes_status_and_stderr() -> None:
    with pytest.raises(ProbeError) as caught:
        CommandRunner().run(["sh", "-c", "echo out; echo 'bad things\n  happened' >&2; exit 3"])
    assert str(caught.value) == "sh exited with status 3: bad things happened"


def test_long_stderr_is_trimmed() -> None:
    with pytest.raises(ProbeError) as caught:
        CommandRunner().run(["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x >&2; exit 1"])
    assert len(str(caught.value)) < 450
    assert str(caught.value).endswith("...")


def test_timeout_kills_the_program_and_what_it_started() -> None:
    started = time.monotonic()
    with pytest.raises(ProbeError, match=r"did not finish within 0\.3 s and was killed"):
        # The background sleep keeps stdout open: unless the whole session is killed,
        # collecting the output would wait for it.
        CommandRunner().run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3)
    assert time.monotonic() - started < 5


def test_empty_command_line_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        CommandRunner().run([])


def test_recorded_runner_replays_outputs_and_failures() -> None:
    failure = ProbeError("rpm exited with status 1: error: rpmdb open failed")
    replay = runner.RecordedRunner({("rpm", "-qa"): "bash\n", ("rpm", "--broken"): failure})
    assert replay.run(["rpm", "-qa"]) == "bash\n"
    with pytest.raises(ProbeError, match="rpmdb open failed"):
        replay.run(["rpm", "--broken"])
    with pytest.raises(ProbeError, match="no recording"):
        replay.run(["rpm", "-V"])
    assert replay.calls == [("rpm", "-qa"), ("rpm", "--broken"), ("rpm", "-V")]


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
def test_timeout_does_not_wait_for_a_descendant_that_left_the_session() -> None:
    started = time.monotonic()
    with pytest.raises(ProbeError, match="was killed"):
        # setsid puts the 3 s sleep out of reach of the kill; it still holds stdout open.
        CommandRunner().run(["sh", "-c", "setsid sleep 3 & sleep 30"], timeout=0.3)
    assert time.monotonic() - started < 2.5
