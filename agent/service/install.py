"""Writing the systemd unit into place: the one install step automated, kept small and safe.

Only the unit file is written (and a state directory outside /var/lib created, where
systemd's StateDirectory= cannot). Enabling and starting stay with the administrator, who
sees exactly what was written first. An existing unit that differs is never overwritten
without ``force``: local changes belong in drop-ins, and a silent overwrite would lose them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.service.model import SYSTEMD_UNIT, ServiceError

__all__ = ["InstallResult", "install_unit"]


@dataclass(frozen=True)
class InstallResult:
    path: Path
    changed: bool


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old unit or the new one, never half of it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def install_unit(unit_text: str, unit_dir: Path, state_dir: Path, *, force: bool) -> InstallResult:
    """Write ``unit_text`` as ``unit_dir/posture-agent.service``; needs root."""
    if sys.platform != "linux" or os.geteuid() != 0:
        raise ServiceError(
            "installing the service needs root: run it with sudo, or print the unit with"
            " `posture-agent install-service --print` and install it yourself"
        )
    if not unit_dir.is_dir():
        raise ServiceError(f"{unit_dir} is not a directory: is systemd installed here?")
    path = unit_dir / SYSTEMD_UNIT
    if path.exists():
        if path.read_text(encoding="utf-8") == unit_text:
            return InstallResult(path, changed=False)
        if not force:
            raise ServiceError(
                f"{path} exists and differs: put local changes in a drop-in"
                f" (systemctl edit {SYSTEMD_UNIT}), or pass --force to replace it"
            )
    if not state_dir.is_relative_to("/var/lib"):
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomically(path, unit_text)
    return InstallResult(path, changed=True)
