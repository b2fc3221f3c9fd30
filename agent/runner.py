"""The one place the agent runs external programs.

Every probe that needs a command (``rpm``, ``systemctl``, ``cryptsetup`` here; PowerShell,
``fdesetup`` and friends on the other platforms) goes through a ``Runner``, for three reasons:
a failure always becomes a ``ProbeError`` whose reason an analyst can read (not installed,
hung, exited non-zero with this message), no probe can forget the timeout or reach for a
shell, and tests can hand a source a runner that replays recorded output instead.

Programs run without a shell, with stdin closed, in the ``C.UTF-8`` locale (so their output
is never translated), and in a session of their own so a timeout kills the program together
with anything it started.

Example::

    runner = CommandRunner()
    text = runner.run(["rpm", "-qa"], timeout=30)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from agent.sources.base import ProbeError

__all__ = ["DEFAULT_RUNNER", "SUCCESS", "CommandRunner", "RecordedRunner", "Runner", "run"]

_POSIX = sys.platform != "win32"

#: Where administration tools live; a daemon's PATH often lacks the sbin directories.
_POSIX_TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

#: How long to wait for a killed program's pipes to close before giving up on them.
_REAP_SECONDS = 1.0

#: How much of a failing program's stderr an error message keeps.
_STDERR_LIMIT = 400

#: The exit statuses that mean success unless a probe says otherwise.
SUCCESS = frozenset({0})


class Runner(Protocol):
    """Something that runs a program and returns its standard output."""

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        ok_statuses: Collection[int] = SUCCESS,
        *,
        with_stderr: bool = False,
    ) -> str:
        """``argv``'s stdout as text; raises ProbeError when it cannot run or fails."""
        ...


class CommandRunner:
    """Runs real programs (the default); see the module docstring for the guarantees."""

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        ok_statuses: Collection[int] = SUCCESS,
        *,
        with_stderr: bool = False,
    ) -> str:
        """Run ``argv`` and return its stdout, decoded as UTF-8 (bad bytes replaced).

        Raises ProbeError when the program is missing or cannot start, runs longer than
        ``timeout`` seconds (it is killed first), or exits with a status outside
        ``ok_statuses`` (trimmed stderr included). Some tools report a state through their
        status (``spctl --status`` says "disabled" and exits 1): their probes pass the
        statuses that still carry an answer, and parse stdout. ``with_stderr`` returns
        stderr too, interleaved as written, for tools that print part of their answer
        there (``softwareupdate`` prints "No new software available." on stderr).
        """
        if not argv:
            raise ValueError("an empty command line cannot be run")
        program = argv[0]
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if with_stderr else subprocess.PIPE,
                env=_child_environment(),
                start_new_session=_POSIX,
            )
        except FileNotFoundError:
            raise ProbeError(f"{program} is not installed (not found on PATH)") from None
        except OSError as error:
            raise ProbeError(f"cannot run {program}: {error.strerror or error}") from None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            _reap(process)
            raise ProbeError(
                f"{program} did not finish within {timeout:g} s and was killed"
            ) from None
        if process.returncode not in ok_statuses:
            raise ProbeError(
                _failure_reason(program, process.returncode, stdout if stderr is None else stderr)
            )
        return stdout.decode("utf-8", errors="replace")


def _child_environment() -> dict[str, str]:
    """Our environment, with an untranslated locale and the usual tool directories on PATH."""
    environment = dict(os.environ)
    environment["LC_ALL"] = "C.UTF-8"
    if _POSIX:
        path = [part for part in environment.get("PATH", "").split(os.pathsep) if part]
        path += [directory for directory in _POSIX_TOOL_DIRS if directory not in path]
        environment["PATH"] = os.pathsep.join(path)
    return environment


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the program and, on POSIX, everything in its session (pipes close with them)."""
    if sys.platform == "win32":
        process.kill()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Collect a killed program; a descendant that escaped its session may hold the pipes."""
    try:
        process.communicate(timeout=_REAP_SECONDS)
    except subprocess.TimeoutExpired:
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _failure_reason(program: str, returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        reason = f"{program} was killed by signal {-returncode}"
    else:
        reason = f"{program} exited with status {returncode}"
    message = " ".join(stderr.decode("utf-8", errors="replace").split())
    if len(message) > _STDERR_LIMIT:
        message = message[: _STDERR_LIMIT - 3] + "..."
    return f"{reason}: {message}" if message else reason


class RecordedRunner:
    """Replays recorded outputs instead of running anything: for tests and demonstrations.

    ``recordings`` maps a command line (as a tuple) to its recorded stdout, or to the
    ProbeError that running it raised. A command without a recording raises a ProbeError,
    just as a missing program would. ``calls`` lists the command lines asked for.
    """

    def __init__(self, recordings: Mapping[tuple[str, ...], str | ProbeError]) -> None:
        self._recordings = dict(recordings)
        self.calls: list[tuple[str, ...]] = []

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        ok_statuses: Collection[int] = SUCCESS,
        *,
        with_stderr: bool = False,
    ) -> str:
        command = tuple(argv)
        self.calls.append(command)
        recorded = self._recordings.get(command)
        if recorded is None:
            raise ProbeError(f"{command[0] if command else '?'}: no recording for {command!r}")
        if isinstance(recorded, ProbeError):
            raise recorded
        return recorded


#: The runner sources use unless they are given another (tests pass a RecordedRunner).
DEFAULT_RUNNER = CommandRunner()


def run(
    argv: Sequence[str],
    timeout: float = 10.0,
    ok_statuses: Collection[int] = SUCCESS,
    *,
    with_stderr: bool = False,
) -> str:
    """``DEFAULT_RUNNER.run``: for callers that never need to substitute the runner."""
    return DEFAULT_RUNNER.run(argv, timeout, ok_statuses, with_stderr=with_stderr)
