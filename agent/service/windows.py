"""The agent as a Windows service: a PowerShell script that registers and hardens it.

A console program is not a Windows service: the Service Control Manager (SCM) waits for the
service control handshake and kills a program that never makes it (error 1053). So the
service is hosted by ``agent.service.winservice`` (pywin32's ``ServiceFramework``), which
the interpreter runs as the service's own process, and which runs ``posture-agent run``
as its child. The script this module renders:

- registers the service as **LocalSystem**: BitLocker status (the Win32_EncryptableVolume
  WMI class), ``secedit /export``, ``Get-Tpm`` and ``Confirm-SecureBootUEFI`` all need an
  administrator, and LocalService or a virtual account is not one;
- strips that account down with ``sc.exe privs`` to the privileges the probes use, so the
  token has no SeDebug, SeTcb, SeLoadDriver, SeTakeOwnership or SeRestore;
- restarts it on failure with growing delays (``sc.exe failure``; ``failureflag 1`` makes
  a non-zero exit count as a failure, not only a crash);
- lets only SYSTEM and Administrators into the state directory, which holds the agent's
  credential (ProgramData is readable by every user by default).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PureWindowsPath

from agent.service.model import DESCRIPTION, DISPLAY_NAME, WINDOWS_SERVICE_NAME, AgentService

__all__ = [
    "HOST_MODULE",
    "PRIVILEGES",
    "RESTART_DELAYS_MS",
    "HostOptions",
    "binary_path",
    "host_arguments",
    "next_steps",
    "parse_host_arguments",
    "render_script",
]

#: The module the interpreter runs as the service process (it speaks to the SCM).
HOST_MODULE = "agent.service.winservice"

#: Everything else LocalSystem holds is removed from the service's token.
PRIVILEGES = (
    "SeChangeNotifyPrivilege",  # traverse directories: every process needs it
    "SeImpersonatePrivilege",  # WMI and COM calls (BitLocker, Defender, Windows Update)
    "SeCreateGlobalPrivilege",  # named objects in the global namespace (COM, PowerShell)
    "SeSecurityPrivilege",  # read audit settings with secedit
    "SeBackupPrivilege",  # read files whatever their ACL, as CAP_DAC_READ_SEARCH on Linux
    "SeSystemEnvironmentPrivilege",  # read UEFI variables: Confirm-SecureBootUEFI
)

#: Restart after 10 s, then 1 min, then every 5 min; the count resets after a quiet day.
RESTART_DELAYS_MS = (10_000, 60_000, 300_000)
_RESET_SECONDS = 86_400

# Well-known SIDs, so the ACL works on every display language ("Administratoren"...).
_SYSTEM_SID = "*S-1-5-18"
_ADMINISTRATORS_SID = "*S-1-5-32-544"


@dataclass(frozen=True)
class HostOptions:
    """What the service host needs: its log file and the agent's own arguments."""

    log_file: PureWindowsPath
    agent_arguments: tuple[str, ...]


def host_arguments(service: AgentService) -> tuple[str, ...]:
    """The host's arguments: ``--log-file FILE -- <posture-agent arguments>``."""
    return ("--log-file", str(service.log_file), "--", *service.run_arguments())


def parse_host_arguments(argv: Sequence[str]) -> HostOptions:
    """Read back what ``host_arguments`` wrote; ValueError names what is wrong."""
    if len(argv) < 4 or argv[0] != "--log-file" or argv[2] != "--":
        raise ValueError(
            f"expected --log-file FILE -- AGENT-ARGUMENTS..., got {' '.join(argv) or 'nothing'}"
        )
    return HostOptions(PureWindowsPath(argv[1]), tuple(argv[3:]))


def binary_path(service: AgentService) -> str:
    """The service's command line (its ImagePath), quoted as Windows programs parse it.

    ``subprocess.list2cmdline`` applies the Microsoft C runtime rules, the ones python.exe
    uses to split its own command line, so every argument reads back unchanged.
    """
    interpreter = service.program[0]
    return subprocess.list2cmdline([interpreter, "-m", HOST_MODULE, *host_arguments(service)])


def _literal(text: str) -> str:
    """A PowerShell single-quoted string: nothing inside is expanded; ' doubles."""
    return "'" + text.replace("'", "''") + "'"


def _lock_down(directory: PureWindowsPath) -> str:
    """Replace the directory's inherited ACL (Users may read ProgramData) with ours."""
    return (
        f"& icacls.exe {_literal(str(directory))} /inheritance:r /grant:r"
        f" '{_SYSTEM_SID}:(OI)(CI)F' '{_ADMINISTRATORS_SID}:(OI)(CI)F' | Out-Null; "
        'if ($LASTEXITCODE -ne 0) { throw "icacls failed with $LASTEXITCODE" }'
    )


def render_script(service: AgentService) -> str:
    """The PowerShell script (run elevated) that registers, hardens and starts the service."""
    name = _literal(WINDOWS_SERVICE_NAME)
    state_dir = PureWindowsPath(service.state_dir)
    log_dir = PureWindowsPath(str(service.log_file)).parent
    actions = "/".join(f"restart/{delay}" for delay in RESTART_DELAYS_MS)
    lines = [
        f"# {WINDOWS_SERVICE_NAME}: rendered by `posture-agent install-service`.",
        "# Run in an elevated PowerShell. Needs pywin32 installed into the same Python.",
        "$ErrorActionPreference = 'Stop'",
        "function Invoke-Sc {",
        "    & sc.exe @args",
        '    if ($LASTEXITCODE -ne 0) { throw "sc.exe $args failed with $LASTEXITCODE" }',
        "}",
        f"if (Get-Service -Name {name} -ErrorAction SilentlyContinue) {{",
        f"    throw 'remove the old service first: Stop-Service {WINDOWS_SERVICE_NAME};"
        f" sc.exe delete {WINDOWS_SERVICE_NAME}'",
        "}",
        "# State (the agent's credential) and logs: SYSTEM and Administrators only.",
        f"New-Item -ItemType Directory -Force -Path {_literal(str(state_dir))},"
        f" {_literal(str(log_dir))} | Out-Null",
        *(_lock_down(directory) for directory in (state_dir, log_dir)),
        f"New-Service -Name {name} -DisplayName {_literal(DISPLAY_NAME)}"
        f" -Description {_literal(DESCRIPTION)} -StartupType Automatic"
        f" -BinaryPathName {_literal(binary_path(service))} | Out-Null",
        f"Invoke-Sc config {name} start= delayed-auto obj= LocalSystem",
        f"Invoke-Sc privs {name} {'/'.join(PRIVILEGES)}",
        f"Invoke-Sc sidtype {name} unrestricted",
        f"Invoke-Sc failure {name} reset= {_RESET_SECONDS} actions= {actions}",
        f"Invoke-Sc failureflag {name} 1",
        f"if (Test-Path -LiteralPath {_literal(str(state_dir / 'agent.db'))}) {{",
        f"    Start-Service -Name {name}",
        "} else {",
        f"    Write-Host {_literal(f'Registered: enroll into {state_dir}, then Start-Service')}",
        "}",
    ]
    return "\r\n".join(lines) + "\r\n"


def next_steps(service: AgentService) -> list[str]:
    """What the administrator does around the script."""
    interpreter = service.program[0]
    return [
        f"install Posture and pywin32 into a dedicated Python (not a venv: a venv's python.exe"
        f" starts the real interpreter as a child, which the SCM cannot talk to): {interpreter}",
        "save this script as install-posture-agent.ps1 and run it in an elevated PowerShell:"
        " it creates the locked-down directories and registers the service",
        f"enroll once into the service's state directory: & '{interpreter}' -m agent enroll"
        f" --state-dir '{service.state_dir}' --collector HOST:PORT --ca-cert CA.pem"
        f" --secret SECRET; then Start-Service {WINDOWS_SERVICE_NAME}",
        f"watch it: Get-Service {WINDOWS_SERVICE_NAME}; Get-Content -Wait '{service.log_file}'",
    ]
