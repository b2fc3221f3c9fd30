"""Identity of the machine and its OS: ``os_version``, ``system_info``, ``kernel_info``, ``uptime``.

Everything here comes from a handful of small files (/etc/os-release, /proc, /sys/class/dmi)
and ``uname``, which is why none of these tables ever spawns a program.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path

import psutil

from agent.sources.base import Row
from agent.sources.linux.common import make_row, read_optional, read_required

__all__ = [
    "collect_kernel_info",
    "collect_os_version",
    "collect_system_info",
    "collect_uptime",
    "kernel_info_row",
    "os_version_row",
    "parse_cpuinfo",
    "parse_os_release",
    "uptime_row",
]

OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
DMI_DIR = Path("/sys/class/dmi/id")

#: os-release keys -> os_version columns, as osquery maps them.
_OS_RELEASE_COLUMNS = {
    "NAME": "name",
    "VERSION": "version",
    "BUILD_ID": "build",
    "ID": "platform",
    "ID_LIKE": "platform_like",
    "VERSION_CODENAME": "codename",
}

#: system_info columns -> files under /sys/class/dmi/id (serials are readable by root only).
_DMI_COLUMNS = {
    "hardware_vendor": "sys_vendor",
    "hardware_model": "product_name",
    "hardware_version": "product_version",
    "hardware_serial": "product_serial",
    "board_vendor": "board_vendor",
    "board_model": "board_name",
    "board_version": "board_version",
    "board_serial": "board_serial",
}


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release(5) file, with its shell-style quoting removed."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        try:
            fields[key] = " ".join(shlex.split(raw))
        except ValueError:
            fields[key] = raw.strip("\"'")
    return fields


def os_version_row(os_release: dict[str, str], arch: str) -> Row:
    """osquery's os_version: major/minor/patch split from VERSION_ID, "0" where absent."""
    values = {column: os_release.get(key, "") for key, column in _OS_RELEASE_COLUMNS.items()}
    if not values["name"]:
        values["name"] = "Unknown"
    parts = os_release.get("VERSION_ID", "").split(".", 2)
    for index, column in enumerate(("major", "minor", "patch")):
        values[column] = parts[index] if index < len(parts) and parts[index] else "0"
    values["arch"] = arch
    return make_row("os_version", values)


def collect_os_version() -> list[Row]:
    for path in OS_RELEASE_PATHS:
        text = read_optional(path)
        if text is not None:
            return [os_version_row(parse_os_release(text), os.uname().machine)]
    return [os_version_row({}, os.uname().machine)]


def parse_cpuinfo(text: str) -> dict[str, str]:
    """CPU brand, model, microcode and core/socket counts from /proc/cpuinfo."""
    first: dict[str, str] = {}
    processors = 0
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    physical_id = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        first.setdefault(key, value)
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical_id = value
            sockets.add(value)
        elif key == "core id":
            cores.add((physical_id, value))
    return {
        "cpu_brand": first.get("model name", first.get("Model", "")),
        "cpu_subtype": first.get("model", ""),
        "cpu_microcode": first.get("microcode", ""),
        "cpu_logical_cores": str(processors) if processors else "",
        "cpu_physical_cores": str(len(cores)) if cores else "",
        "cpu_sockets": str(len(sockets)) if sockets else "",
    }


def _host_uuid() -> str:
    """The SMBIOS product UUID, else the machine-id shaped as a UUID (upper case, as osquery)."""
    product_uuid = (read_optional(DMI_DIR / "product_uuid") or "").strip()
    if product_uuid:
        return product_uuid.upper()
    machine_id = (read_optional("/etc/machine-id") or "").strip()
    if len(machine_id) != 32:
        return ""
    parts = (
        machine_id[:8],
        machine_id[8:12],
        machine_id[12:16],
        machine_id[16:20],
        machine_id[20:],
    )
    return "-".join(parts).upper()


def collect_system_info() -> list[Row]:
    """One row; hostname is the kernel's name for the host (no DNS lookup, unlike osquery)."""
    hostname = socket.gethostname()
    values = {"hostname": hostname, "computer_name": hostname, "local_hostname": hostname}
    values["uuid"] = _host_uuid()
    values["cpu_type"] = os.uname().machine
    values.update(parse_cpuinfo(read_optional("/proc/cpuinfo") or ""))
    if not values["cpu_logical_cores"]:
        values["cpu_logical_cores"] = str(os.cpu_count() or "")
    values["physical_memory"] = str(psutil.virtual_memory().total)
    for column, name in _DMI_COLUMNS.items():
        values[column] = (read_optional(DMI_DIR / name) or "").strip()
    return [make_row("system_info", values)]


def kernel_info_row(release: str, cmdline: str) -> Row:
    """osquery's kernel_info: version = release, path = BOOT_IMAGE, device = root=."""
    arguments = cmdline.strip()
    options: dict[str, str] = {}
    for word in arguments.split():
        key, sep, value = word.partition("=")
        if sep:
            options.setdefault(key, value)
    values = {
        "version": release,
        "arguments": arguments,
        "path": options.get("BOOT_IMAGE", ""),
        "device": options.get("root", ""),
    }
    return make_row("kernel_info", values)


def collect_kernel_info() -> list[Row]:
    cmdline = read_required("/proc/cmdline", "kernel_info")
    return [kernel_info_row(os.uname().release, cmdline)]


def uptime_row(total_seconds: int) -> Row:
    days, rest = divmod(total_seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    values = {
        "days": days,
        "hours": hours,
        "minutes": minutes,
        "seconds": seconds,
        "total_seconds": total_seconds,
    }
    return make_row("uptime", {column: str(value) for column, value in values.items()})


def collect_uptime() -> list[Row]:
    text = read_required("/proc/uptime", "uptime")
    return [uptime_row(int(float(text.split()[0])))]
