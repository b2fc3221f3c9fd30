"""``mounts``: mounted filesystems, from /proc/mounts and statvfs(3).

``device_alias`` is the device path with symlinks resolved (``/dev/mapper/vg-root`` becomes
``/dev/dm-1``): that is the name ``disk_encryption`` uses, so Fleet's join
``mounts.device_alias = disk_encryption.name`` finds the volume under ``/``.

Filesystem sizes are not read for network filesystems: statvfs on an NFS or CIFS mount
whose server went away blocks for minutes, and a laptop agent must not hang on the coffee
shop Wi-Fi. Those rows keep their block and inode columns "".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from agent.sources.base import Row
from agent.sources.linux.common import make_row, read_optional, read_required

__all__ = ["NETWORK_FILESYSTEMS", "collect_mounts", "mount_rows", "parse_proc_mounts"]

PROC_MOUNTS = Path("/proc/mounts")
#: The host's mount table as PID 1 sees it. A sandboxed agent service (systemd's
#: ProtectSystem, PrivateTmp) has its own mount namespace, so its /proc/mounts shows mounts
#: the host does not have (a private /tmp, read-only flags) and would mislead mount checks.
HOST_MOUNTS = Path("/proc/1/mounts")
SYS_DEV_BLOCK = Path("/sys/dev/block")

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "afs",
        "ceph",
        "glusterfs",
        "9p",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
    }
)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes (\\040...)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_proc_mounts(text: str) -> list[tuple[str, str, str, str]]:
    """(device, mount point, type, options) for each line of /proc/mounts."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            device, path, fs_type, options = (_unescape(field) for field in fields[:4])
            entries.append((device, path, fs_type, options))
    return entries


def _device_of(path: str) -> str:
    """The block device holding the filesystem at ``path``, from its device number."""
    try:
        number = os.stat(path).st_dev
    except OSError:
        return ""
    uevent = read_optional(f"{SYS_DEV_BLOCK}/{os.major(number)}:{os.minor(number)}/uevent")
    for line in (uevent or "").splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return "/dev/" + value
    return ""


def _device_alias(device: str, path: str, fs_type: str) -> str:
    """The device with symlinks resolved; pseudo devices ("proc", "tmpfs") stay as named.

    A device node that does not exist (``/dev/root``, which the kernel names the root
    filesystem it mounted itself) is found from the mounted filesystem's device number.
    """
    if not device.startswith("/"):
        return device
    alias = os.path.realpath(device)
    if os.path.exists(alias) or fs_type in NETWORK_FILESYSTEMS:
        return alias
    return _device_of(path) or alias


def _sizes(path: str, fs_type: str) -> dict[str, str]:
    if fs_type in NETWORK_FILESYSTEMS:
        return {}
    try:
        stats = os.statvfs(path)
    except OSError:
        return {}
    return {
        "blocks_size": str(stats.f_bsize),
        "blocks": str(stats.f_blocks),
        "blocks_free": str(stats.f_bfree),
        "blocks_available": str(stats.f_bavail),
        "inodes": str(stats.f_files),
        "inodes_free": str(stats.f_ffree),
    }


def mount_rows(entries: list[tuple[str, str, str, str]]) -> list[Row]:
    rows = []
    for device, path, fs_type, options in entries:
        values = {
            "device": device,
            "device_alias": _device_alias(device, path, fs_type),
            "path": path,
            "type": fs_type,
            "flags": options,
            **_sizes(path, fs_type),
        }
        rows.append(make_row("mounts", values))
    return rows


def collect_mounts() -> list[Row]:
    text = read_optional(HOST_MOUNTS) or read_required(PROC_MOUNTS, "mounts")
    return mount_rows(parse_proc_mounts(text))
