"""The Windows service host: speaks the SCM's handshake and runs ``posture-agent`` under it.

Windows only, and imported only there: the interpreter runs it as the service process
(``python.exe -m agent.service.winservice --log-file FILE -- run --state-dir DIR``, the
command line ``agent.service.windows`` registers). pywin32's ``ServiceFramework`` answers
the Service Control Manager; the agent itself runs as a child process, so a stop request
is honoured at once (the agent's spool survives being killed at any moment) and an agent
that exits on its own makes the service fail, which triggers the SCM's restart actions.

The agent's stderr goes to a size-bounded log file (ProgramData, SYSTEM and Administrators
only); starts, stops and failures also go to the Application event log.
"""
# ruff: noqa: E402 -- the platform guard must come before the Windows-only imports.

from __future__ import annotations

import sys

assert sys.platform == "win32", "agent.service.winservice runs only on Windows"

import logging
import logging.handlers
import subprocess
import threading
from pathlib import Path
from typing import IO

import servicemanager
import win32service
import win32serviceutil

from agent.service.model import DESCRIPTION, DISPLAY_NAME, WINDOWS_SERVICE_NAME
from agent.service.windows import HostOptions, parse_host_arguments

__all__ = ["AgentService", "main"]

LOG_BYTES, LOG_BACKUPS = 5 * 1024 * 1024, 3
#: The agent yields to the user's programs, as Nice=10 does on Linux.
_CHILD_FLAGS = subprocess.CREATE_NO_WINDOW | subprocess.BELOW_NORMAL_PRIORITY_CLASS


class AgentExitedError(Exception):
    """The agent stopped without being asked to: the service fails so the SCM restarts it."""


def _file_log(path: Path) -> logging.Logger:
    """A rotating log: the agent's lines already carry their time and level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("posture.agent.service")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _copy_lines(stream: IO[bytes], log: logging.Logger) -> None:
    for line in stream:
        log.info(line.decode("utf-8", errors="replace").rstrip())


class AgentService(win32serviceutil.ServiceFramework):
    _svc_name_ = WINDOWS_SERVICE_NAME
    _svc_display_name_ = DISPLAY_NAME
    _svc_description_ = DESCRIPTION

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self._stopping = threading.Event()
        self._agent: subprocess.Popen[bytes] | None = None

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
        self._stopping.set()
        agent = self._agent
        if agent is not None and agent.poll() is None:
            agent.terminate()

    def SvcDoRun(self) -> None:
        options: HostOptions = parse_host_arguments(sys.argv[1:])
        log = _file_log(Path(options.log_file))
        command = [sys.executable, "-m", "agent", *options.agent_arguments]
        agent = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            creationflags=_CHILD_FLAGS,
        )
        self._agent = agent
        if self._stopping.is_set():  # a stop request that came while we were starting
            agent.terminate()
        servicemanager.LogInfoMsg(f"{WINDOWS_SERVICE_NAME}: agent started (pid {agent.pid})")
        assert agent.stdout is not None
        _copy_lines(agent.stdout, log)
        status = agent.wait()
        if not self._stopping.is_set():
            message = f"{WINDOWS_SERVICE_NAME}: the agent exited with status {status}"
            log.error(message)
            servicemanager.LogErrorMsg(message)
            raise AgentExitedError(message)


def main() -> None:
    """Entry point when the SCM starts the service process."""
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(AgentService)
    try:
        servicemanager.StartServiceCtrlDispatcher()  # type: ignore[no-untyped-call]  # stub
    except win32service.error as error:
        sys.exit(
            f"{error}: this module is started by the Service Control Manager; register it"
            " with the script from `posture-agent install-service --print --platform windows`"
        )


if __name__ == "__main__":
    main()
