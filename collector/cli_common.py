"""What every ``posture-collector`` command shares: options, the service, times, output."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.policy.loader import load_packs
from collector.service import PostureService, ServiceError
from collector.store import open_store

__all__ = [
    "REPO_POLICIES",
    "add_common",
    "add_user",
    "emit",
    "open_service",
    "parse_instant",
    "parse_since",
]

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"

_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("POSTURE_DB", "posture.db"),
        help="a SQLite file (path or sqlite:///path) or postgresql://user@host:port/db"
        " (default: $POSTURE_DB or ./posture.db)",
    )
    parser.add_argument("--policies", type=Path, default=REPO_POLICIES, help="policy packs")


def _default_user() -> str:
    try:
        return os.environ.get("POSTURE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return ""


def add_user(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user",
        default=_default_user(),
        help="who is acting, recorded with the action (default: $POSTURE_USER or your login)",
    )


@contextmanager
def open_service(args: argparse.Namespace, interval: int = 300) -> Iterator[PostureService]:
    packs = load_packs(args.policies)
    store = open_store(args.db)
    service = PostureService(store, packs, interval_seconds=interval)
    try:
        yield service
    finally:
        service.close()
        store.close()


def parse_instant(text: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC unless it names its offset)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ServiceError(
            f"{text!r} is not an ISO date or date-time (2025-03-31T17:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_since(text: str, now: datetime) -> datetime:
    """Like ``parse_instant``, or a span back from now: ``30m``, ``24h``, ``7d``."""
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    return parse_instant(text)


def emit(data: bytes, output: Path | None) -> None:
    """Write ``data`` to ``output``, or to stdout."""
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
