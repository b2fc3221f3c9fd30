"""The agent as a service: the systemd unit, the launchd plist and the Windows script.

The unit is checked by systemd's own tools where they exist (verify, and the offline
security analysis), and its privilege claims by running the real agent with exactly the
capabilities, no-new-privileges and W^X memory the unit grants. The plist is read back with
plistlib; the Windows script and service host are checked as text, since neither PowerShell
nor pywin32 runs here.
"""

from __future__ import annotations

import ast
import json
import os
import plistlib
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pytest

from agent.service import ServiceError, agent_service, render_definition
from agent.service.model import LAUNCHD_LABEL, SYSTEMD_UNIT, WINDOWS_SERVICE_NAME
from agent.service.systemd import (
    CAPABILITIES,
    local_systemd_version,
    parse_systemd_version,
    render_unit,
)
from agent.service.windows import (
    HOST_MODULE,
    PRIVILEGES,
    binary_path,
    host_arguments,
    parse_host_arguments,
    render_script,
)

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "agent"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
#: The interpreter itself, not a virtualenv's link to it: what /proc/<pid>/exe shows.
INTERPRETER = os.path.realpath(sys.executable)
IS_ROOT = os.name == "posix" and os.geteuid() == 0

#: Runs argv with Linux's memory-deny-write-execute (PR_SET_MDWE), as the unit's
#: MemoryDenyWriteExecute= does; kernels before 6.3 lack it and run argv unchanged.
MDWE_EXEC = """
import ctypes, os, sys
ctypes.CDLL(None).prctl(65, 1, 0, 0, 0)
os.execvp(sys.argv[1], sys.argv[1:])
"""

#: A TCP listener owned by someone else than the agent: it prints its port, then waits.
LISTENER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
time.sleep(120)
"""


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"assignment outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key, []).append(value)
    return sections


def linux_unit(tmp_path: Path) -> tuple[Path, str]:
    """This installation's unit, for this machine's systemd, written where tools can read it."""
    service = agent_service("linux", "linux")
    text = render_unit(service, local_systemd_version())
    path = tmp_path / SYSTEMD_UNIT
    path.write_text(text)
    return path, text


# systemd ------------------------------------------------------------------------------


def test_unit_runs_the_installed_agent_with_least_privilege_and_limits(tmp_path: Path) -> None:
    _, text = linux_unit(tmp_path)
    service = parse_unit(text)["Service"]
    one = {key: values[-1] for key, values in service.items()}

    program = one["ExecStart"].split()[0]
    assert Path(program) == Path(sys.executable).parent / "posture-agent"
    assert one["ExecStart"].endswith("run --state-dir /var/lib/posture-agent")
    assert one["StateDirectory"] == "posture-agent" and one["StateDirectoryMode"] == "0700"
    assert one["ReadWritePaths"] == "/var/lib/posture-agent"
    assert set(one["CapabilityBoundingSet"].split()) == {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "MemoryDenyWriteExecute": "yes",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "UMask": "0077",
    }
    assert {key: one.get(key) for key in expected} == expected
    # ptrace itself stays blocked although CAP_SYS_PTRACE is kept for /proc.
    assert any(
        "@debug" in value and "process_vm_readv" in value for value in service["SystemCallFilter"]
    )
    memory_high, memory_max = (
        int(one[key].removesuffix("M")) for key in ("MemoryHigh", "MemoryMax")
    )
    assert memory_high < memory_max < 200  # osquery's watchdog stops its worker at 200 MB
    assert int(one["CPUQuota"].removesuffix("%")) <= 10
    assert "ProtectHostname" not in service, "a private UTS namespace freezes the hostname"
    assert parse_unit(text)["Install"]["WantedBy"] == ["multi-user.target"]


def test_exec_start_and_paths_survive_spaces_and_specifiers(tmp_path: Path) -> None:
    service = agent_service("linux", "linux", state_dir="/srv/posture 100%", executable="/opt/$x")
    unit = parse_unit(render_unit(service))["Service"]
    assert unit["ExecStart"] == ['/opt/$$x run --state-dir "/srv/posture 100%%"']
    assert unit["ReadWritePaths"] == ['"/srv/posture 100%%"']
    assert "StateDirectory" not in unit  # only paths under /var/lib can be systemd-managed


def test_restart_backoff_keys_follow_the_systemd_version() -> None:
    assert parse_systemd_version("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT") == 252
    assert parse_systemd_version("not systemd") is None
    service = agent_service("linux", "linux")
    assert "RestartSteps=" in render_unit(service, 255)
    assert "RestartMaxDelaySec=" in render_unit(service, 254)
    for version in (252, None):
        assert "RestartSteps=" not in render_unit(service, version)


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    path, _ = linux_unit(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and unparsable values are only warned about: none may appear.
    assert [line for line in result.stderr.splitlines() if str(path) in line] == []


@needs_systemd_analyze
def test_unit_exposure_stays_ok_in_systemd_security_analysis(tmp_path: Path) -> None:
    if (local_systemd_version() or 0) < 250:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or newer")
    path, _ = linux_unit(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert result.returncode == 0 and level, result.stdout[-400:] + result.stderr
    assert float(level.group(1)) <= 3.0


@pytest.fixture
def foreign_listener() -> Iterator[subprocess.Popen[str]]:
    """A listening socket owned by nobody, as another user's service would be."""
    if not IS_ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run processes as another user")
    process = subprocess.Popen(
        [*NOBODY, INTERPRETER, "-c", LISTENER],
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    yield process
    process.kill()
    process.communicate()


def _agent_sees(
    listener: subprocess.Popen[str], port: str, capabilities: tuple[str, ...]
) -> dict[str, str]:
    """The agent's processes and listening_ports rows for the listener, run with only
    ``capabilities`` in its bounding set, no new privileges and W^X memory."""
    bounding = ",".join(["-all", *(f"+{cap.removeprefix('CAP_').lower()}" for cap in capabilities)])
    command = [
        sys.executable, "-c", MDWE_EXEC, "setpriv", f"--bounding-set={bounding}",
        "--inh-caps=-all", "--no-new-privs", *AGENT,
        "facts", "--table", "processes", "--table", "listening_ports",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    pid = str(listener.pid)
    ports = [row for row in facts["listening_ports"] if row["port"] == port]
    processes = [row for row in facts["processes"] if row["pid"] == pid]
    assert len(ports) == 1 and len(processes) == 1, (ports, processes)
    return {"port_pid": ports[0]["pid"], "path": processes[0]["path"]}


def test_the_units_capabilities_tie_other_users_ports_to_their_programs(
    foreign_listener: subprocess.Popen[str],
) -> None:
    assert foreign_listener.stdout is not None
    port = foreign_listener.stdout.readline().strip()
    seen = _agent_sees(foreign_listener, port, CAPABILITIES)
    assert seen == {
        "port_pid": str(foreign_listener.pid),
        "path": INTERPRETER,
    }
    # Without CAP_SYS_PTRACE the same facts lose their owner: why the unit keeps it.
    blind = _agent_sees(foreign_listener, port, ("CAP_DAC_READ_SEARCH",))
    assert blind == {"port_pid": "", "path": ""}


# launchd ------------------------------------------------------------------------------


def test_plist_is_a_launch_daemon_that_restarts_and_logs() -> None:
    service = agent_service("darwin", "linux", state_dir="/Library/Posture state")
    plist = plistlib.loads(render_definition(service).text.encode())
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [
        "/opt/posture/bin/posture-agent", "run", "--state-dir", "/Library/Posture state",
    ]  # fmt: skip
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] >= 10
    assert (
        plist["StandardErrorPath"]
        == plist["StandardOutPath"]
        == ("/Library/Logs/Posture/agent.log")
    )
    assert plist["ProcessType"] == "Background"
    assert plist["Umask"] == 0o077 and plist["UserName"] == "root"


# Windows ------------------------------------------------------------------------------


def test_windows_script_registers_a_hardened_localsystem_service() -> None:
    service = agent_service("windows", "linux", state_dir=r"C:\Posture's data\agent")
    script = render_script(service)
    lines = script.split("\r\n")
    assert script.endswith("\r\n") and "\n" not in script.replace("\r\n", "")

    new_service = next(line for line in lines if line.startswith("New-Service"))
    assert f"-Name '{WINDOWS_SERVICE_NAME}'" in new_service
    image = re.search(r"-BinaryPathName '((?:[^']|'')*)'", new_service)
    assert image and image.group(1).replace("''", "'") == binary_path(service)
    assert binary_path(service).startswith(
        f'"C:\\Program Files\\Posture\\python.exe" -m {HOST_MODULE}'
    )
    assert "C:\\Posture''s data\\agent" in script  # the quote is doubled, not a string end

    assert (
        f"Invoke-Sc config '{WINDOWS_SERVICE_NAME}' start= delayed-auto obj= LocalSystem" in lines
    )
    privileges = next(line for line in lines if line.startswith("Invoke-Sc privs")).split()[-1]
    assert privileges.split("/") == list(PRIVILEGES)
    assert "SeSystemEnvironmentPrivilege" in PRIVILEGES  # Confirm-SecureBootUEFI
    assert not {"SeDebugPrivilege", "SeTcbPrivilege", "SeLoadDriverPrivilege"} & set(PRIVILEGES)
    failure = next(line for line in lines if line.startswith("Invoke-Sc failure "))
    delays = [int(delay) for delay in re.findall(r"restart/(\d+)", failure)]
    assert delays == sorted(delays) and len(delays) == 3, failure
    assert f"Invoke-Sc failureflag '{WINDOWS_SERVICE_NAME}' 1" in lines
    # The credential's directory is closed to Users, by SID so any display language works.
    assert sum("/inheritance:r" in line and "*S-1-5-18:" in line for line in lines) == 2


def test_windows_host_reads_back_the_arguments_it_is_registered_with() -> None:
    service = agent_service(
        "windows", "linux", agent_options=("--osquery-socket", r"\\.\pipe\osquery.em")
    )
    options = parse_host_arguments(host_arguments(service))
    assert options.log_file == PureWindowsPath(r"C:\ProgramData\Posture\logs\agent.log")
    assert options.agent_arguments == (
        "--osquery-socket", r"\\.\pipe\osquery.em", "run", "--state-dir",
        r"C:\ProgramData\Posture\agent",
    )  # fmt: skip
    with pytest.raises(ValueError, match="--log-file FILE"):
        parse_host_arguments(["run", "--state-dir", "x"])


def test_windows_service_host_speaks_the_service_control_handshake() -> None:
    """pywin32 cannot be imported here: the host module is checked as source."""
    path = ROOT / Path(*HOST_MODULE.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    host = next(
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "AgentService"
    )
    assert [ast.unparse(base) for base in host.bases] == ["win32serviceutil.ServiceFramework"]
    fields = {
        target.id: ast.unparse(node.value)
        for node in host.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert fields["_svc_name_"] == "WINDOWS_SERVICE_NAME"
    assert {"_svc_display_name_", "_svc_description_"} <= set(fields)
    methods = {node.name for node in host.body if isinstance(node, ast.FunctionDef)}
    assert {"SvcDoRun", "SvcStop"} <= methods
    source = ast.unparse(tree)
    for call in ("PrepareToHostSingle(AgentService)", "StartServiceCtrlDispatcher()"):
        assert call in source
    assert source.index("assert sys.platform == 'win32'") < source.index("import servicemanager")


# Descriptions that cannot be rendered safely -------------------------------------------


@pytest.mark.parametrize(
    ("platform", "state_dir", "executable", "reason"),
    [
        ("windows", "C:\\", None, "below the root"),
        ("darwin", "relative/dir", None, "absolute path"),
        ("linux", "/var/lib/a\nExecStartPre=/bin/evil", None, "control character"),
        ("linux", None, "posture-agent", "absolute path"),
        ("solaris", None, None, "unknown platform"),
    ],
)
def test_unsafe_descriptions_are_refused(
    platform: str, state_dir: str | None, executable: str | None, reason: str
) -> None:
    with pytest.raises(ServiceError, match=reason):
        agent_service(platform, "linux", state_dir=state_dir, executable=executable)


# The command, as real processes --------------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "darwin", "windows"])
def test_install_service_print_shows_the_definition(platform: str) -> None:
    result = subprocess.run(
        [*AGENT, "install-service", "--print", "--platform", platform],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "# next: " in result.stderr
    if platform == "linux":
        execstart = parse_unit(result.stdout)["Service"]["ExecStart"][0]
        assert execstart.startswith(str(Path(sys.executable).parent / "posture-agent"))
    elif platform == "darwin":
        assert plistlib.loads(result.stdout.encode())["Label"] == LAUNCHD_LABEL
    else:
        assert f"New-Service -Name '{WINDOWS_SERVICE_NAME}'" in result.stdout


def test_install_service_refuses_to_write_other_platforms_services(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENT, "install-service", "--platform", "darwin", "--unit-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--print --platform darwin" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not IS_ROOT, reason="writing the unit needs root")
def test_install_service_writes_the_unit_once_and_never_clobbers(tmp_path: Path) -> None:
    units, state = tmp_path / "units", tmp_path / "state"
    units.mkdir()
    command = [*AGENT, "install-service", "--unit-dir", str(units), "--state-dir", str(state)]

    def install(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=60, cwd=ROOT
        )

    first = install()
    assert first.returncode == 0, first.stderr
    unit = units / SYSTEMD_UNIT
    assert first.stdout.strip() == f"wrote {unit}"
    assert unit.read_text() == install("--print").stdout
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert "already up to date" in install().stdout

    unit.write_text(unit.read_text() + "# a local change\n")
    refused = install()
    assert refused.returncode == 2 and "differs" in refused.stderr
    assert unit.read_text().endswith("# a local change\n")
    assert install("--force").returncode == 0
    assert unit.read_text() == install("--print").stdout
    assert [path.name for path in units.iterdir()] == [SYSTEMD_UNIT]  # no temporary left


def test_install_service_needs_root(tmp_path: Path) -> None:
    as_user = NOBODY if IS_ROOT else []
    if IS_ROOT and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root")
    result = subprocess.run(
        [*as_user, *AGENT, "install-service", "--unit-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs root" in result.stderr
    assert list(tmp_path.iterdir()) == []
