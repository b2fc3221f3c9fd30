"""One description of the agent as a service, from which each platform's definition is made.

The systemd unit, the launchd plist and the Windows service must agree on what runs (the
same ``posture-agent run`` command line), where the state and the log live, and how hard
the agent may lean on the laptop. Rendering all three from one value keeps them from
drifting apart, and keeps every path and limit in one place a reviewer can read.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

__all__ = [
    "DESCRIPTION",
    "DISPLAY_NAME",
    "LAUNCHD_LABEL",
    "PLATFORMS",
    "SYSTEMD_UNIT",
    "WINDOWS_SERVICE_NAME",
    "AgentService",
    "ServiceError",
    "ServiceLimits",
    "agent_service",
]

SYSTEMD_UNIT = "posture-agent.service"
LAUNCHD_LABEL = "org.posture.agent"
WINDOWS_SERVICE_NAME = "PostureAgent"
DISPLAY_NAME = "Posture agent"
DESCRIPTION = (
    "Posture endpoint agent: gathers this machine's security posture facts and streams them"
    " to the Posture collector"
)
PLATFORMS = ("linux", "darwin", "windows")


class ServiceError(Exception):
    """The service cannot be described or installed as asked; the message says why."""


@dataclass(frozen=True)
class ServiceLimits:
    """Resource ceilings, well under what osquery's watchdog tolerates (200 MB, 10 % CPU).

    The memory ceiling covers the agent and the probes it runs (they share its cgroup); a
    full collection peaks near 50 MB here. CPU is a hard ceiling, not an average as in
    osquery's watchdog: 10 % keeps a collection (about 0.4 CPU s) within a few seconds of
    wall time, far inside the probes' own timeouts, where 5 % doubles that wall time.
    """

    memory_high_mb: int = 96
    memory_max_mb: int = 128
    cpu_quota_percent: int = 10
    nice: int = 10


@dataclass(frozen=True)
class AgentService:
    """The agent as a service on one platform: what runs, where state and logs live.

    ``program`` is the command that starts the agent's CLI (the installed ``posture-agent``,
    or ``python -m agent``); on Windows its first element is the interpreter that hosts the
    service. ``log_file`` is None where the platform's own log collects stderr (journald).
    """

    platform: str
    program: tuple[str, ...]
    state_dir: PurePath
    log_file: PurePath | None
    agent_options: tuple[str, ...] = ()
    limits: ServiceLimits = field(default_factory=ServiceLimits)

    def run_arguments(self) -> tuple[str, ...]:
        """The CLI arguments of the daemon: global options, then ``run --state-dir DIR``."""
        return (*self.agent_options, "run", "--state-dir", str(self.state_dir))

    def command(self) -> tuple[str, ...]:
        """The full command line the service manager starts."""
        return (*self.program, *self.run_arguments())


#: Where each platform keeps the agent's state and log; None means the system journal.
_LOCATIONS: dict[str, tuple[PurePath, PurePath | None]] = {
    "linux": (PurePosixPath("/var/lib/posture-agent"), None),
    "darwin": (
        PurePosixPath("/Library/Application Support/Posture/agent"),
        PurePosixPath("/Library/Logs/Posture/agent.log"),
    ),
    "windows": (
        PureWindowsPath(r"C:\ProgramData\Posture\agent"),
        PureWindowsPath(r"C:\ProgramData\Posture\logs\agent.log"),
    ),
}

#: The documented install locations, used when rendering for another platform than this.
_INSTALLED_PROGRAM: dict[str, tuple[str, ...]] = {
    "linux": ("/opt/posture/bin/posture-agent",),
    "darwin": ("/opt/posture/bin/posture-agent",),
    "windows": (r"C:\Program Files\Posture\python.exe", "-m", "agent"),
}


def _pure_path(platform: str, path: str | PurePath) -> PurePath:
    return PureWindowsPath(path) if platform == "windows" else PurePosixPath(path)


def _this_program(platform: str) -> tuple[str, ...]:
    """How this installation starts the agent: the posture-agent beside this interpreter.

    The console script next to ``sys.executable`` belongs to the very installation running
    this command, unlike whatever ``posture-agent`` comes first on PATH. Windows services
    are hosted by the interpreter itself (see ``agent.service.winservice``).
    """
    interpreter = os.path.abspath(sys.executable)
    if platform != "windows":
        script = Path(interpreter).with_name("posture-agent")
        if script.is_file() and os.access(script, os.X_OK):
            return (str(script),)
    return (interpreter, "-m", "agent")


def agent_service(
    platform: str,
    this_platform: str,
    *,
    state_dir: str | None = None,
    executable: str | None = None,
    agent_options: tuple[str, ...] = (),
) -> AgentService:
    """The service description for ``platform``, with this installation's paths when it is
    the platform we run on, and the documented install locations otherwise."""
    if platform not in PLATFORMS:
        raise ServiceError(f"unknown platform {platform!r}: choose one of {', '.join(PLATFORMS)}")
    default_state, log_file = _LOCATIONS[platform]
    if state_dir and platform == this_platform:
        state_dir = os.path.abspath(state_dir)
    state = _pure_path(platform, state_dir) if state_dir else default_state
    if not state.is_absolute() or state == type(state)(state.anchor):
        raise ServiceError(
            f"the state directory must be an absolute path below the root, not {str(state)!r}"
        )
    if executable and not _pure_path(platform, executable).is_absolute():
        raise ServiceError(f"the executable must be an absolute path, not {executable!r}")
    if executable:
        program: tuple[str, ...] = (
            (executable, "-m", "agent") if platform == "windows" else (executable,)
        )
    elif platform == this_platform:
        program = _this_program(platform)
    else:
        program = _INSTALLED_PROGRAM[platform]
    _check_printable(platform, (*program, str(state), *agent_options))
    return AgentService(platform, program, state, log_file, agent_options)


def _check_printable(platform: str, values: tuple[str, ...]) -> None:
    """Refuse control characters: no service format can carry a newline in a path safely."""
    for value in values:
        if any(ord(character) < 32 or ord(character) == 127 for character in value):
            raise ServiceError(
                f"{value!r} holds a control character; a {platform} service "
                "definition cannot carry it safely"
            )
