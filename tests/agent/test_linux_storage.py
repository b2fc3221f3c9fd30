"""mounts and disk_encryption, down to Fleet's join between them."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from agent.runner import RecordedRunner
from agent.sources.base import ProbeError, Row
from agent.sources.linux import encryption, storage
from agent.sources.linux.common import make_row
from protos.posture.v1.tables import TABLES, columns_for

FIXTURE = Path(__file__).parents[3] / "shared/fixtures/linux/cryptsetup-status-luks2.txt"

#: Fleet's "Full disk encryption enabled (Linux)" policy, verbatim.
FLEET_FDE = (
    "SELECT 1 FROM mounts m, disk_encryption d WHERE m.device_alias = d.name "
    "AND d.encrypted = 1 AND m.path = '/';"
)
BRIEF_FDE = (
    "SELECT 1 FROM mounts m JOIN disk_encryption d ON d.name = m.device_alias "
    "WHERE m.path = '/' AND d.encrypted = 1"
)

PROC_MOUNTS = """\
/dev/mapper/vg-root / ext4 rw,relatime,errors=remount-ro 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/sdb1 /media/alice/USB\\040STICK vfat rw,nosuid,nodev 0 0
nas:/export /mnt/nas nfs4 rw,relatime,vers=4.2 0 0
"""


def test_proc_mounts_unescapes_spaces() -> None:
    entries = storage.parse_proc_mounts(PROC_MOUNTS)
    assert entries[0] == ("/dev/mapper/vg-root", "/", "ext4", "rw,relatime,errors=remount-ro")
    assert entries[3][1] == "/media/alice/USB STICK"
    assert len(entries) == 5


def test_mount_rows_resolve_device_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "dm-1"
    target.write_text("")
    (tmp_path / "vg-root").symlink_to(target)
    entries = [
        (str(tmp_path / "vg-root"), str(tmp_path), "ext4", "rw"),
        ("tmpfs", str(tmp_path), "tmpfs", "rw"),
        ("nas:/export", str(tmp_path), "nfs4", "rw"),
    ]
    rows = storage.mount_rows(entries)
    assert all(tuple(row) == columns_for("mounts", "linux") for row in rows)
    assert rows[0]["device_alias"] == str(target)
    assert int(rows[0]["blocks"]) > 0 and int(rows[0]["blocks_size"]) > 0
    assert rows[1]["device_alias"] == "tmpfs"
    assert rows[2]["blocks"] == "" and rows[2]["flags"] == "rw"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux host")
def test_missing_device_node_is_found_from_the_filesystem(tmp_path: Path) -> None:
    (row,) = storage.mount_rows([("/dev/root", str(tmp_path), "ext4", "rw")])
    alias = row["device_alias"]
    if alias == "/dev/root":
        pytest.skip("this host's filesystem is not on a block device (overlay, tmpfs)")
    assert os.stat(alias).st_rdev == os.stat(tmp_path).st_dev


def _block_device(
    root: Path, path: str, size: str, *, uevent: str, dm: tuple[str, str] = ("", "")
) -> Path:
    """A device directory as the kernel lays it out under /sys/devices."""
    directory = root / path
    directory.mkdir(parents=True)
    (directory / "size").write_text(size + "\n")
    (directory / "uevent").write_text(uevent)
    (directory / "slaves").mkdir()
    if dm[0]:
        (directory / "dm").mkdir()
        (directory / "dm" / "uuid").write_text(dm[0] + "\n")
        (directory / "dm" / "name").write_text(dm[1] + "\n")
    return directory


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """A laptop's sysfs: LVM on LUKS on nvme0n1p3, a dm-verity volume, an empty loop device."""
    root = tmp_path / "sys"
    disk = "devices/pci0000:00/nvme/nvme0/block/nvme0n1"
    virtual = "devices/virtual/block"
    luks_uuid = "CRYPT-LUKS2-9f2b0c6d1e3a4b5c8d7e6f5a4b3c2d1e-nvme0n1p3_crypt"
    devices = {
        "259:0": _block_device(root, disk, "1000215216", uevent="DEVNAME=nvme0n1\nDEVTYPE=disk\n"),
        "259:1": _block_device(root, f"{disk}/nvme0n1p1", "1048576", uevent="DEVNAME=nvme0n1p1\n"),
        "259:2": _block_device(
            root, f"{disk}/nvme0n1p3", "998000000", uevent="DEVNAME=nvme0n1p3\n"
        ),
        "253:0": _block_device(
            root,
            f"{virtual}/dm-0",
            "997967232",
            uevent="DEVNAME=dm-0\n",
            dm=(luks_uuid, "nvme0n1p3_crypt"),
        ),
        "253:1": _block_device(
            root,
            f"{virtual}/dm-1",
            "900000000",
            uevent="DEVNAME=dm-1\n",
            dm=("LVM-Kq3BZJd2Y0", "vg-root"),
        ),
        "253:2": _block_device(
            root,
            f"{virtual}/dm-2",
            "2048",
            uevent="DEVNAME=dm-2\n",
            dm=("CRYPT-VERITY-5f4e3d2c1b0a-verity", "verity"),
        ),
        "7:0": _block_device(root, f"{virtual}/loop0", "0", uevent="DEVNAME=loop0\n"),
    }
    for name in ("nvme0n1p1", "nvme0n1p3"):
        (root / disk / name / "partition").write_text("1\n")
    (root / virtual / "dm-0" / "slaves" / "nvme0n1p3").mkdir()
    (root / virtual / "dm-1" / "slaves" / "dm-0").mkdir()
    (root / virtual / "dm-2" / "slaves" / "nvme0n1p1").mkdir()
    (root / "dev" / "block").mkdir(parents=True)
    for number, directory in devices.items():
        (root / "dev" / "block" / number).symlink_to(directory)
    return root


def _cryptsetup_recording() -> str:
    if not FIXTURE.is_file():
        pytest.skip(f"recorded fixture {FIXTURE} is not available")
    return FIXTURE.read_text().split("\n", 1)[1]


def test_cryptsetup_status_fixture_parses() -> None:
    fields = encryption.parse_cryptsetup_status(_cryptsetup_recording())
    assert fields["type"] == "LUKS2"
    assert fields["cipher"] == "aes-xts-plain64"
    assert fields["keysize"] == "512 bits"
    assert fields["device"] == "/dev/sdc2"


def _rows(sysfs: Path, runner: RecordedRunner) -> dict[str, Row]:
    cipher_of = encryption.cryptsetup_cipher(runner)
    devices = encryption.scan_block_devices(sysfs)
    rows = encryption.disk_encryption_rows(devices, {"dm-1": "4d1e-aa"}, cipher_of)
    assert all(tuple(row) == columns_for("disk_encryption", "linux") for row in rows)
    return {row["name"]: row for row in rows}


def test_lvm_on_luks_is_encrypted_through_its_slaves(sysfs: Path) -> None:
    status = _cryptsetup_recording()
    replay = RecordedRunner({("cryptsetup", "status", "nvme0n1p3_crypt"): status})
    rows = _rows(sysfs, replay)
    assert set(rows) == {
        "/dev/nvme0n1",
        "/dev/nvme0n1p1",
        "/dev/nvme0n1p3",
        "/dev/dm-0",
        "/dev/dm-1",
        "/dev/dm-2",
    }
    encrypted = {name for name, row in rows.items() if row["encrypted"] == "1"}
    assert encrypted == {"/dev/dm-0", "/dev/dm-1"}
    assert rows["/dev/dm-1"] == {
        "name": "/dev/dm-1",
        "uuid": "4d1e-aa",
        "encrypted": "1",
        "type": "LUKS2-aes-xts-plain64",
        "encryption_status": "encrypted",
    }
    assert rows["/dev/dm-2"]["encryption_status"] == "not encrypted"  # dm-verity
    assert replay.calls == [("cryptsetup", "status", "nvme0n1p3_crypt")]


def test_type_falls_back_to_the_dm_uuid_without_cryptsetup(sysfs: Path) -> None:
    missing = ProbeError("cryptsetup is not installed (not found on PATH)")
    rows = _rows(sysfs, RecordedRunner({("cryptsetup", "status", "nvme0n1p3_crypt"): missing}))
    assert rows["/dev/dm-0"]["type"] == rows["/dev/dm-1"]["type"] == "LUKS2"


def _fleet_database(mounts: list[Row], volumes: list[Row]) -> sqlite3.Connection:
    database = sqlite3.connect(":memory:")
    for table, rows in (("mounts", mounts), ("disk_encryption", volumes)):
        columns = [column for column in TABLES[table].columns if column.name in rows[0]]
        ddl = ", ".join(f'"{column.name}" {column.sql_type}' for column in columns)
        database.execute(f'CREATE TABLE "{table}" ({ddl})')
        marks = ", ".join("?" for _ in columns)
        values = [[row[column.name] for column in columns] for row in rows]
        database.executemany(f'INSERT INTO "{table}" VALUES ({marks})', values)
    return database


def test_fleets_disk_encryption_policy_passes_on_lvm_on_luks(sysfs: Path) -> None:
    replay = RecordedRunner({})
    volumes = list(_rows(sysfs, replay).values())
    root = make_row(
        "mounts", {"device": "/dev/mapper/vg-root", "device_alias": "/dev/dm-1", "path": "/"}
    )
    efi = make_row(
        "mounts",
        {"device": "/dev/nvme0n1p1", "device_alias": "/dev/nvme0n1p1", "path": "/boot/efi"},
    )
    database = _fleet_database([root, efi], volumes)
    assert database.execute(FLEET_FDE).fetchall() == [(1,)]
    assert database.execute(BRIEF_FDE).fetchall() == [(1,)]
    plain_root = {**root, "device_alias": "/dev/nvme0n1p1"}
    assert _fleet_database([plain_root], volumes).execute(FLEET_FDE).fetchall() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux host")
def test_this_hosts_mounts_and_encryption_join() -> None:
    mounts = storage.collect_mounts()
    assert all(tuple(row) == columns_for("mounts", "linux") for row in mounts)
    root = next(row for row in mounts if row["path"] == "/")
    assert int(root["blocks_size"]) > 0
    volumes = encryption.collect_disk_encryption(RecordedRunner({}))
    for row in volumes:
        assert tuple(row) == columns_for("disk_encryption", "linux")
        assert row["name"].startswith("/dev/") and row["encrypted"] in ("0", "1")
    alias = root["device_alias"]
    if alias.startswith("/dev/") and os.path.exists(alias) and volumes:
        joined = _fleet_database([root], volumes).execute(
            "SELECT d.encrypted FROM mounts m JOIN disk_encryption d ON d.name = m.device_alias "
            "WHERE m.path = '/'"
        )
        assert len(joined.fetchall()) == 1
