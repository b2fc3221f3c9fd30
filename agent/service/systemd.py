"""The agent as a systemd service: a hardened unit with the least privilege the probes allow.

The agent runs as root because the facts it reports (``/etc/shadow`` status, other users'
``authorized_keys``, which process owns a listening port) are root's to read, but it keeps
only two of root's capabilities, and everything else is fenced off:

- ``CAP_DAC_READ_SEARCH``: read files whatever their mode (RHEL's ``/etc/shadow`` is 0000,
  users' ``~/.ssh`` is 0700). ``open_by_handle_at``, the dangerous use of this capability,
  is blocked by the system call filter (it is in ``@privileged``).
- ``CAP_SYS_PTRACE``: read ``/proc/<pid>/exe`` and ``/proc/<pid>/fd`` of other users'
  processes, which is how a listening port is tied to its program (measured: without it
  the pid and path of another user's listener come back empty). The ``ptrace`` and
  ``process_vm_*`` system calls themselves are blocked, so it cannot attach to anything.

The file system is read-only except the state directory; ``ProtectHostname`` is left out on
purpose, because a private UTS namespace would freeze the hostname the agent reports.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from agent.runner import run
from agent.service.model import DESCRIPTION, SYSTEMD_UNIT, AgentService
from agent.sources.base import ProbeError

__all__ = [
    "CAPABILITIES",
    "RESTART_STEPS_SINCE",
    "UNIT_DIR",
    "local_systemd_version",
    "next_steps",
    "parse_systemd_version",
    "render_unit",
]

UNIT_DIR = PurePosixPath("/etc/systemd/system")
CAPABILITIES = ("CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE")
#: systemd grew RestartSteps= and RestartMaxDelaySec= (restart backoff) in version 254.
RESTART_STEPS_SINCE = 254
_STATE_ROOT = PurePosixPath("/var/lib")


def parse_systemd_version(text: str) -> int | None:
    """252 from ``systemctl --version``'s first line, "systemd 252 (252.38-1~deb12u1)"."""
    match = re.match(r"systemd (\d+)", text)
    return int(match.group(1)) if match else None


def local_systemd_version() -> int | None:
    """This machine's systemd version, or None when systemctl is absent or fails."""
    try:
        return parse_systemd_version(run(["systemctl", "--version"], timeout=5.0))
    except ProbeError:
        return None


def _quoted(word: str, *, expand_env: bool) -> str:
    """One word as systemd reads it back: ``%`` is a specifier, ``$`` expands in Exec lines."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if expand_env:
        escaped = escaped.replace("$", "$$")
    if escaped and escaped != ";" and not re.search(r"[\s'\"\\]", escaped):
        return escaped
    return f'"{escaped}"'


def _exec_line(words: tuple[str, ...]) -> str:
    return " ".join(_quoted(word, expand_env=True) for word in words)


def _state_lines(state_dir: PurePosixPath) -> list[str]:
    """Writable state: systemd creates it (0700) when it lies under /var/lib."""
    lines = []
    if state_dir.is_relative_to(_STATE_ROOT) and state_dir != _STATE_ROOT:
        lines += [
            f"StateDirectory={_quoted(str(state_dir.relative_to(_STATE_ROOT)), expand_env=False)}",
            "StateDirectoryMode=0700",
        ]
    lines.append(f"ReadWritePaths={_quoted(str(state_dir), expand_env=False)}")
    return lines


def _restart_lines(systemd_version: int | None) -> list[str]:
    """Restart on failure, with growing delays where systemd supports them.

    Exit status 2 is a configuration error (not enrolled, credential revoked): restarting
    cannot fix it, so the unit stays down with the reason in the journal.
    """
    lines = ["Restart=on-failure", "RestartSec=5s", "RestartPreventExitStatus=2"]
    if systemd_version is not None and systemd_version >= RESTART_STEPS_SINCE:
        lines += ["RestartSteps=6", "RestartMaxDelaySec=5min"]
    return lines


_SANDBOX = """\
# Least privilege: root's identity, two of its capabilities, a read-only system.
CapabilityBoundingSet={capabilities}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @debug process_vm_readv process_vm_writev
SystemCallErrorNumber=EPERM
UMask=0077"""

_LIMITS = """\
# Invisible on a laptop: well under osquery's watchdog limits (200 MB, 10 % of a core).
MemoryHigh={memory_high}M
MemoryMax={memory_max}M
CPUQuota={cpu_quota}%
Nice={nice}
IOSchedulingClass=best-effort
IOSchedulingPriority=7"""


def render_unit(service: AgentService, systemd_version: int | None = None) -> str:
    """The unit file text; ``systemd_version`` adds the keys newer systemd understands."""
    limits = service.limits
    state_dir = PurePosixPath(service.state_dir)
    lines = [
        f"# {SYSTEMD_UNIT}: rendered by `posture-agent install-service`.",
        f"# Change it with `systemctl edit {SYSTEMD_UNIT}` (a drop-in), not by editing here.",
        "[Unit]",
        f"Description={DESCRIPTION}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={_exec_line(service.command())}",
        *_restart_lines(systemd_version),
        "TimeoutStopSec=15s",
        "Environment=PYTHONDONTWRITEBYTECODE=1",
        "# Logs go to the journal: journalctl -u posture-agent",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=posture-agent",
        *_state_lines(state_dir),
        _SANDBOX.format(capabilities=" ".join(CAPABILITIES)),
        _LIMITS.format(
            memory_high=limits.memory_high_mb,
            memory_max=limits.memory_max_mb,
            cpu_quota=limits.cpu_quota_percent,
            nice=limits.nice,
        ),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def next_steps(service: AgentService, unit_path: PurePosixPath) -> list[str]:
    """What the administrator does after the unit is in place."""
    return [
        f"enroll once, as root, into the service's state directory:"
        f" posture-agent enroll --state-dir {shlex.quote(str(service.state_dir))}"
        " --collector HOST:PORT"
        " --ca-cert /etc/posture-agent/ca.pem --secret SECRET",
        f"put the unit at {unit_path}, then: systemctl daemon-reload"
        f" && systemctl enable --now {SYSTEMD_UNIT}",
        f"watch it: systemctl status {SYSTEMD_UNIT}; journalctl -u {SYSTEMD_UNIT} -f",
    ]
