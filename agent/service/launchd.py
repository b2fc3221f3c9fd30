"""The agent as a macOS LaunchDaemon: started at boot as root, restarted when it fails.

A LaunchDaemon (not a LaunchAgent) because the facts are system-wide and several need
root: ``fdesetup status``, ``profiles``, other users' settings. macOS offers no capability
split for root, so the restraint comes from elsewhere: ``ProcessType=Background`` lets the
system throttle the agent's CPU and I/O whenever the user is busy, ``Umask`` keeps its
credential and spool unreadable by others, and ``ThrottleInterval`` spaces restarts.
launchd enforces no memory ceiling on macOS (``ResidentSetSize`` is ignored).
"""

from __future__ import annotations

import plistlib
import shlex
from pathlib import PurePosixPath
from typing import Any

from agent.service.model import LAUNCHD_LABEL, AgentService

__all__ = ["DAEMON_DIR", "next_steps", "plist_path", "render_plist"]

DAEMON_DIR = PurePosixPath("/Library/LaunchDaemons")
#: Seconds launchd waits before starting the agent again after it exits.
THROTTLE_SECONDS = 60


def plist_path() -> PurePosixPath:
    return DAEMON_DIR / f"{LAUNCHD_LABEL}.plist"


def _daemon(service: AgentService) -> dict[str, Any]:
    log = str(service.log_file)
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(service.command()),
        "RunAtLoad": True,
        # Restart after a crash or a failing exit (a clean exit is a deliberate stop).
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_SECONDS,
        "ExitTimeOut": 15,
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": service.limits.nice,
        "Umask": 0o077,
        "UserName": "root",
        "WorkingDirectory": str(service.state_dir),
        "EnvironmentVariables": {"PYTHONDONTWRITEBYTECODE": "1"},
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }


def render_plist(service: AgentService) -> str:
    """The plist as XML, the form ``plutil -lint`` and ``launchctl`` read."""
    return plistlib.dumps(_daemon(service), sort_keys=False).decode()


def next_steps(service: AgentService) -> list[str]:
    """What the administrator runs, as root, to install and start the daemon."""
    state_dir = shlex.quote(str(service.state_dir))
    log_file = shlex.quote(str(service.log_file))
    log_dir = shlex.quote(str(PurePosixPath(str(service.log_file)).parent))
    return [
        f"create the directories: sudo mkdir -p -m 700 {state_dir} {log_dir}",
        f"enroll once into the service's state directory: sudo posture-agent enroll"
        f" --state-dir {state_dir} --collector HOST:PORT --ca-cert CA.pem"
        " --secret SECRET",
        f"save this plist as {plist_path()} (owner root:wheel, mode 644),"
        f" check it with plutil -lint, then: sudo launchctl bootstrap system {plist_path()}",
        f"watch it: sudo launchctl print system/{LAUNCHD_LABEL}; tail -f {log_file}",
    ]
