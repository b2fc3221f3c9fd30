"""``sip_config``, ``gatekeeper`` and ``alf``: System Integrity Protection, Gatekeeper and
the application firewall, from the tools Apple ships for them.

``sip_config`` comes from ``csrutil status`` and follows osquery: a ``sip`` row whose
``enabled`` is 1 only when every protection is on, then one row per protection flag, named
as in xnu's csr.h, whose ``enabled`` is 1 when that *allow* flag is set (the protection is
off). csrutil's configuration lines map to flags:

=========================  ==========================  ===================================
csrutil line               config_flag                 enabled
=========================  ==========================  ===================================
Apple Internal             allow_apple_internal        1 when "enabled"
Kext Signing               allow_untrusted_kexts       1 when "disabled"
Filesystem Protections     allow_unrestricted_fs       1 when "disabled"
Debugging Restrictions     allow_task_for_pid          1 when "disabled"
DTrace Restrictions        allow_unrestricted_dtrace   1 when "disabled"
NVRAM Protections          allow_unrestricted_nvram    1 when "disabled"
BaseSystem Verification    allow_any_recovery_os       1 when "disabled"
=========================  ==========================  ===================================

"status: enabled." with no configuration lists every osquery flag as 0; "disabled." and
"unknown (Custom Configuration)" make ``sip`` 0. ``enabled_nvram`` is not read ("").

``gatekeeper`` comes from ``spctl --status`` ("assessments enabled"/"assessments
disabled"), because osquery's table reads a database macOS 15 no longer updates and reports
Gatekeeper on when it is off (osquery issue 8528). Only ``assessments_enabled`` is filled.

``alf`` asks ``socketfilterfw``: ``--getglobalstate`` prints "(State = N)" whatever its
wording (0 off, 1 on, 2 block all incoming), which is osquery's ``global_state``;
``--getstealthmode``, ``--getloggingmode`` and ``--getallowsigned`` give
``stealth_enabled``, ``logging_enabled`` and ``allow_signed_enabled`` (on/enabled -> 1,
off/disabled -> 0). The other columns are "".
"""

from __future__ import annotations

import re

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.macos.common import make_row

__all__ = [
    "ALF_COMMANDS",
    "CSRUTIL_COMMAND",
    "SPCTL_COMMAND",
    "alf_rows",
    "collect_alf",
    "collect_gatekeeper",
    "collect_sip_config",
    "gatekeeper_rows",
    "sip_rows",
]

CSRUTIL_COMMAND = ("/usr/bin/csrutil", "status")
SPCTL_COMMAND = ("/usr/sbin/spctl", "--status")
_SOCKETFILTERFW = "/usr/libexec/ApplicationFirewall/socketfilterfw"
ALF_COMMANDS = {
    option: (_SOCKETFILTERFW, option)
    for option in ("--getglobalstate", "--getstealthmode", "--getloggingmode", "--getallowsigned")
}

_OSQUERY_FLAGS = (
    "allow_untrusted_kexts",
    "allow_unrestricted_fs",
    "allow_task_for_pid",
    "allow_kernel_debugger",
    "allow_apple_internal",
    "allow_unrestricted_dtrace",
    "allow_unrestricted_nvram",
    "allow_device_configuration",
)
#: csrutil line -> (flag, the line's value that means the flag is set)
_CSR_LINES = {
    "Apple Internal": ("allow_apple_internal", "enabled"),
    "Kext Signing": ("allow_untrusted_kexts", "disabled"),
    "Filesystem Protections": ("allow_unrestricted_fs", "disabled"),
    "Debugging Restrictions": ("allow_task_for_pid", "disabled"),
    "DTrace Restrictions": ("allow_unrestricted_dtrace", "disabled"),
    "NVRAM Protections": ("allow_unrestricted_nvram", "disabled"),
    "BaseSystem Verification": ("allow_any_recovery_os", "disabled"),
}
_SIP_STATUS = re.compile(r"System Integrity Protection status: (\w+)( \(Custom Configuration\))?")
_CSR_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z ]+): (enabled|disabled)\s*$")
_ALF_STATE = re.compile(r"\(State = (\d)\)")
_ON = re.compile(r"\b(on|enabled)\b", re.IGNORECASE)
_OFF = re.compile(r"\b(off|disabled)\b", re.IGNORECASE)


def sip_rows(output: str) -> list[Row]:
    status = _SIP_STATUS.search(output)
    if status is None:
        raise ProbeError(f"sip_config: unexpected csrutil output {output.strip()[:80]!r}")
    custom = status[2] is not None
    flags: dict[str, str] = {}
    for line in output.splitlines():
        match = _CSR_LINE.match(line)
        if match and match[1] in _CSR_LINES:
            name, set_when = _CSR_LINES[match[1]]
            flags[name] = "1" if match[2] == set_when else "0"
    if status[1] == "enabled" and not custom:
        flags = dict.fromkeys(_OSQUERY_FLAGS, "0")
    protected = status[1] == "enabled" and not any(value == "1" for value in flags.values())
    rows = [make_row("sip_config", {"config_flag": "sip", "enabled": "1" if protected else "0"})]
    rows += [
        make_row("sip_config", {"config_flag": name, "enabled": value})
        for name, value in flags.items()
    ]
    return rows


def gatekeeper_rows(output: str) -> list[Row]:
    answer = output.strip()
    states = {"assessments enabled": "1", "assessments disabled": "0"}
    if answer not in states:
        raise ProbeError(f"gatekeeper: unexpected spctl output {answer[:80]!r}")
    return [make_row("gatekeeper", {"assessments_enabled": states[answer]})]


def _on_off(option: str, output: str) -> str:
    first = output.strip().splitlines()[0] if output.strip() else ""
    if _ON.search(first) and not _OFF.search(first):
        return "1"
    if _OFF.search(first) and not _ON.search(first):
        return "0"
    raise ProbeError(f"alf: unexpected socketfilterfw {option} output {first[:80]!r}")


def alf_rows(outputs: dict[str, str]) -> list[Row]:
    """The alf row from socketfilterfw's answers, keyed by option."""
    state = _ALF_STATE.search(outputs["--getglobalstate"])
    if state is None or state[1] not in "012":
        raise ProbeError("alf: socketfilterfw --getglobalstate printed no (State = 0|1|2)")
    values = {
        "global_state": state[1],
        "stealth_enabled": _on_off("--getstealthmode", outputs["--getstealthmode"]),
        "logging_enabled": _on_off("--getloggingmode", outputs["--getloggingmode"]),
        "allow_signed_enabled": _on_off("--getallowsigned", outputs["--getallowsigned"]),
    }
    return [make_row("alf", values)]


def collect_sip_config(runner: Runner, timeout: float) -> list[Row]:
    return sip_rows(runner.run(CSRUTIL_COMMAND, timeout=timeout))


def collect_gatekeeper(runner: Runner, timeout: float) -> list[Row]:
    # spctl exits 1 when assessments are disabled: the answer is still on stdout.
    return gatekeeper_rows(runner.run(SPCTL_COMMAND, timeout=timeout, ok_statuses=(0, 1)))


def collect_alf(runner: Runner, timeout: float) -> list[Row]:
    outputs = {
        option: runner.run(command, timeout=timeout) for option, command in ALF_COMMANDS.items()
    }
    return alf_rows(outputs)
