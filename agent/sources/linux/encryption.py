"""``disk_encryption``: which block devices are dm-crypt volumes or sit on one.

The device graph comes from sysfs: every block device is a directory reached from
/sys/dev/block/<major:minor> (the enumeration that also works in containers where
/sys/class/block is partial); ``slaves/`` names the devices a device-mapper device is built
on, and a partition's directory sits inside its disk's. A device counts as encrypted when
it, or any device below it, is a dm-crypt target (its ``dm/uuid`` starts with ``CRYPT-``,
except dm-verity and dm-integrity, which cryptsetup also names so). So for LVM on LUKS the
logical volume mounted at ``/`` reads encrypted however deep the stack; osquery inherits
the status from a device's direct parent only, and users report misses (its #7314, #7889).

``type`` follows osquery: the LUKS version, cipher and mode joined by "-", e.g.
``LUKS2-aes-xts-plain64``. The cipher comes from ``cryptsetup status`` when cryptsetup is
installed and the agent is root; otherwise ``type`` holds what the dm uuid tells (``LUKS2``).
Devices of size 0 (unattached loop devices, empty card readers) are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.linux.common import make_row, read_optional

__all__ = [
    "BlockDevice",
    "collect_disk_encryption",
    "cryptsetup_cipher",
    "disk_encryption_rows",
    "parse_cryptsetup_status",
    "scan_block_devices",
]

log = logging.getLogger(__name__)

#: dm uuid subsystems cryptsetup creates that do not encrypt anything by themselves.
_NOT_ENCRYPTING = frozenset({"VERITY", "INTEGRITY", "SUBDEV"})


@dataclass(frozen=True)
class BlockDevice:
    """One block device as sysfs shows it."""

    kernel_name: str
    devname: str
    #: Kernel names of the devices directly below this one.
    parents: tuple[str, ...]
    dm_uuid: str
    dm_name: str

    @property
    def crypt_kind(self) -> str:
        """The dm-crypt format (LUKS2, LUKS1, PLAIN, BITLK...); empty if not dm-crypt."""
        prefix, _, rest = self.dm_uuid.partition("-")
        kind = rest.partition("-")[0]
        if prefix != "CRYPT" or not kind or kind in _NOT_ENCRYPTING:
            return ""
        return kind


def _read_field(path: Path) -> str:
    return (read_optional(path) or "").strip()


def _devname(directory: Path) -> str:
    for line in (read_optional(directory / "uevent") or "").splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return value
    return directory.name


def _device(directory: Path) -> BlockDevice:
    try:
        slaves = tuple(sorted(entry.name for entry in (directory / "slaves").iterdir()))
    except OSError:
        slaves = ()
    disk = (directory.parent.name,) if (directory / "partition").exists() else ()
    return BlockDevice(
        kernel_name=directory.name,
        devname=_devname(directory),
        parents=slaves + disk,
        dm_uuid=_read_field(directory / "dm" / "uuid"),
        dm_name=_read_field(directory / "dm" / "name"),
    )


def scan_block_devices(sys_root: Path = Path("/sys")) -> dict[str, BlockDevice]:
    """Block devices under ``sys_root`` by kernel name, skipping those of size 0."""
    devices: dict[str, BlockDevice] = {}
    try:
        entries = sorted((sys_root / "dev" / "block").iterdir())
    except OSError as error:
        raise ProbeError(f"disk_encryption: cannot list block devices: {error}") from None
    for entry in entries:
        directory = entry.resolve()
        if _read_field(directory / "size") in ("", "0"):
            continue
        device = _device(directory)
        devices[device.kernel_name] = device
    return devices


def parse_cryptsetup_status(text: str) -> dict[str, str]:
    """``key: value`` fields of ``cryptsetup status <name>`` (type, cipher, keysize...)."""
    fields: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _crypt_device_below(
    name: str, devices: dict[str, BlockDevice], seen: frozenset[str] = frozenset()
) -> BlockDevice | None:
    """The dm-crypt device that is ``name`` or lies below it, if any."""
    device = devices.get(name)
    if device is None or name in seen:
        return None
    if device.crypt_kind:
        return device
    for parent in device.parents:
        found = _crypt_device_below(parent, devices, seen | {name})
        if found is not None:
            return found
    return None


def _uuids_by_device(dev_root: Path) -> dict[str, str]:
    """Kernel name -> filesystem (or LUKS, LVM PV) UUID, from udev's /dev/disk/by-uuid."""
    uuids: dict[str, str] = {}
    try:
        links = list((dev_root / "disk" / "by-uuid").iterdir())
    except OSError:
        return uuids
    for link in links:
        uuids.setdefault(link.resolve().name, link.name)
    return uuids


def disk_encryption_rows(
    devices: dict[str, BlockDevice], uuids: dict[str, str], cipher_of: Callable[[str], str]
) -> list[Row]:
    """One row per device; ``cipher_of(dm_name)`` gives "aes-xts-plain64" or "" if unknown."""
    types: dict[str, str] = {}
    rows = []
    for name in sorted(devices):
        crypt = _crypt_device_below(name, devices)
        values = {
            "name": "/dev/" + devices[name].devname,
            "uuid": uuids.get(name, ""),
            "encrypted": "1" if crypt else "0",
            "encryption_status": "encrypted" if crypt else "not encrypted",
        }
        if crypt is not None:
            if crypt.kernel_name not in types:
                cipher = cipher_of(crypt.dm_name) if crypt.dm_name else ""
                types[crypt.kernel_name] = "-".join(filter(None, (crypt.crypt_kind, cipher)))
            values["type"] = types[crypt.kernel_name]
        rows.append(make_row("disk_encryption", values))
    return rows


def cryptsetup_cipher(runner: Runner) -> Callable[[str], str]:
    """A ``cipher_of`` that asks ``cryptsetup status``; "" (logged) when it cannot tell."""

    def cipher_of(dm_name: str) -> str:
        try:
            output = runner.run(["cryptsetup", "status", dm_name], timeout=10.0)
        except ProbeError as error:
            log.info("disk_encryption: no cipher for %s: %s", dm_name, error)
            return ""
        return parse_cryptsetup_status(output).get("cipher", "")

    return cipher_of


def collect_disk_encryption(runner: Runner) -> list[Row]:
    devices = scan_block_devices(Path("/sys"))
    return disk_encryption_rows(devices, _uuids_by_device(Path("/dev")), cryptsetup_cipher(runner))
