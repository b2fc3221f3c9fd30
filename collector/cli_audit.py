"""``posture-collector audit``: read, verify and checkpoint the hash-chained audit log.

``verify`` exits 1 when the chain is broken (an entry edited, removed or reordered, or the
log cut short of a checkpoint), so it can run from cron and page someone. ``checkpoint``
prints the head for an outside party to keep; give those files back to ``verify``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from collector.audit import AuditEntry, Checkpoint
from collector.cli_common import add_common
from collector.service import PostureService, ServiceError

__all__ = ["HANDLERS", "add_parsers"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the append-only, hash-chained audit log")
    actions = audit.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the newest entries, oldest first")
    add_common(listing)
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    verify = actions.add_parser("verify", help="exit 1 if any entry was edited or removed")
    add_common(verify)
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a file from `audit checkpoint`; the chain must still pass through it (repeatable)",
    )
    checkpoint = actions.add_parser("checkpoint", help="the head of the chain, for safekeeping")
    add_common(checkpoint)
    checkpoint.add_argument("--output", type=Path, help="write it here instead of stdout")


def _audit(args: argparse.Namespace, service: PostureService) -> int:
    action: str = args.action
    if action == "list":
        return _list(service, args.limit, args.format)
    if action == "verify":
        return _verify(service, [_read_checkpoint(path) for path in args.checkpoint])
    return _checkpoint(service, args.output)


def _list(service: PostureService, limit: int, fmt: str) -> int:
    if limit < 1:
        raise ServiceError("--limit must be at least 1")
    head = service.audit.store.audit_head()
    after = max(0, head.seq - limit) if head else 0
    entries = service.audit.entries(after)
    if fmt == "json":
        print(json.dumps([_entry_json(entry) for entry in entries], indent=2))
        return 0
    for entry in entries:
        detail = ", ".join(f"{key}={value}" for key, value in sorted(entry.detail.items()))
        print(
            f"{entry.seq:>6}  {entry.at:%Y-%m-%d %H:%M:%S}Z  {entry.actor:<16} {entry.outcome:<6}"
            f" {entry.action:<20} {entry.target}  {detail}".rstrip()
        )
    return 0


def _entry_json(entry: AuditEntry) -> dict[str, object]:
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": dict(entry.detail),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        return Checkpoint.from_json(path.read_text())
    except (OSError, ValueError) as error:
        raise ServiceError(f"{path}: {error}") from error


def _verify(service: PostureService, checkpoints: list[Checkpoint]) -> int:
    result = service.audit.verify(checkpoints)
    for problem in result.problems:
        print(f"BROKEN {problem}")
    if not result.intact:
        problems = len(result.problems)
        print(f"audit log NOT intact: {problems} problem(s) in {result.entries} entries")
        return 1
    head = f"; head {result.head.seq} {result.head.head_hash}" if result.head else ""
    checked = f", {len(checkpoints)} checkpoint(s) matched" if checkpoints else ""
    print(f"audit log intact: {result.entries} entries{checked}{head}")
    return 0


def _checkpoint(service: PostureService, output: Path | None) -> int:
    if not service.audit.verify().intact:
        print("the audit log does not verify; run `audit verify` first", file=sys.stderr)
        return 1
    checkpoint = service.audit.checkpoint()
    if checkpoint is None:
        raise ServiceError("the audit log is empty: nothing to checkpoint yet")
    if output is None:
        print(checkpoint.to_json())
    else:
        output.write_text(checkpoint.to_json() + "\n")
        print(f"checkpoint of entry {checkpoint.seq} written to {output}", file=sys.stderr)
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace, PostureService], int]] = {"audit": _audit}
