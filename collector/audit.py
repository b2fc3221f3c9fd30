"""The audit log: who changed what, when, and whether it worked, in a hash chain.

Every entry carries the SHA-256 of the entry before it, and its own hash covers its content
and that link. Editing an entry breaks its own hash; removing or reordering entries breaks
the link of the next one; removing entries from the end is caught by a *checkpoint* (the
head's sequence number and hash at some moment) kept by an outside party: ``verify``
checks the chain still passes through it. This is the promise auditors get from a
transparency log without a server of their own: the collector cannot quietly rewrite its
past once a checkpoint has left the building.

Entries never hold secrets: callers pass names and ids, never tokens, passwords or enroll
secrets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "GENESIS",
    "OUTCOMES",
    "AuditEntry",
    "AuditLog",
    "AuditStore",
    "Checkpoint",
    "Verification",
    "entry_hash",
    "verify_chain",
]

#: The link of the first entry: no entry came before it.
GENESIS = "0" * 64
OUTCOMES = ("ok", "denied", "error")


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: Mapping[str, object]
    prev_hash: str
    hash: str


def entry_hash(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    detail: Mapping[str, object],
    prev_hash: str,
) -> str:
    """SHA-256 over a canonical JSON array, so any verifier in any language can redo it."""
    canonical = json.dumps(
        [seq, _instant(at), actor, action, target, outcome, detail, prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain at a moment, for an outside party to keep."""

    seq: int
    head_hash: str
    taken_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {"seq": self.seq, "head_hash": self.head_hash, "taken_at": _instant(self.taken_at)},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse a checkpoint file; ValueError names what is wrong with it."""
        try:
            data = json.loads(text)
            checkpoint = cls(
                int(data["seq"]), str(data["head_hash"]), datetime.fromisoformat(data["taken_at"])
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a Posture audit checkpoint: {error}") from error
        if len(checkpoint.head_hash) != 64:
            raise ValueError("not a Posture audit checkpoint: head_hash is not a SHA-256")
        return checkpoint


@dataclass
class Verification:
    entries: int = 0
    head: Checkpoint | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chain(
    entries: Iterable[AuditEntry], checkpoints: Sequence[Checkpoint] = ()
) -> Verification:
    """Walk the chain in stored order; every break is named by the entry where it shows."""
    result = Verification()
    expected_seq, link = 1, GENESIS
    passed: dict[int, str] = {}
    for entry in entries:
        result.entries += 1
        if entry.seq != expected_seq:
            result.problems.append(
                f"entry {entry.seq}: expected entry {expected_seq} here (removed or reordered)"
            )
        if entry.prev_hash != link:
            result.problems.append(
                f"entry {entry.seq}: does not link to the entry before it (removed or reordered)"
            )
        recomputed = entry_hash(
            entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.outcome,
            entry.detail, entry.prev_hash,
        )  # fmt: skip
        if recomputed != entry.hash:
            result.problems.append(f"entry {entry.seq}: content does not match its hash (edited)")
        passed[entry.seq] = entry.hash
        expected_seq, link = entry.seq + 1, entry.hash
        result.head = Checkpoint(entry.seq, entry.hash, entry.at)
    for checkpoint in checkpoints:
        seen = passed.get(checkpoint.seq)
        if seen is None:
            result.problems.append(
                f"checkpoint at entry {checkpoint.seq}: that entry is gone (log truncated)"
            )
        elif seen != checkpoint.head_hash:
            result.problems.append(
                f"checkpoint at entry {checkpoint.seq}: the chain no longer passes through it"
            )
    return result


class AuditStore(Protocol):
    def append_audit(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        detail: Mapping[str, object],
        now: datetime,
    ) -> AuditEntry: ...

    def audit_entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]: ...

    def audit_head(self) -> AuditEntry | None: ...


class AuditLog:
    """What the service and the web layer call: ``record`` one action, ``verify`` them all."""

    def __init__(self, store: AuditStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def record(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: str = "ok",
        detail: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {', '.join(OUTCOMES)}")
        return self.store.append_audit(actor, action, target, outcome, detail or {}, self.clock())

    @contextmanager
    def recording(
        self,
        actor: str,
        action: str,
        target: str,
        detail: Mapping[str, object] | None = None,
        refused: type[Exception] | tuple[type[Exception], ...] = (),
    ) -> Iterator[dict[str, object]]:
        """Record the action in the block with its outcome: ``ok`` if it returns, ``denied``
        if it raises one of ``refused`` (the rule's message kept), ``error`` otherwise.

        The block may add to the yielded detail (an id it created, say).
        """
        details = dict(detail or {})
        try:
            yield details
        except refused as refusal:
            self.record(actor, action, target, "denied", {**details, "reason": str(refusal)})
            raise
        except Exception as error:
            self.record(actor, action, target, "error", {**details, "error": type(error).__name__})
            raise
        self.record(actor, action, target, "ok", details)

    def entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        return self.store.audit_entries(after_seq, limit)

    def verify(self, checkpoints: Sequence[Checkpoint] = ()) -> Verification:
        return verify_chain(self._all(), checkpoints)

    def checkpoint(self) -> Checkpoint | None:
        """The current head, or None while the log is empty."""
        head = self.store.audit_head()
        return None if head is None else Checkpoint(head.seq, head.hash, self.clock())

    def _all(self) -> Iterable[AuditEntry]:
        """Every entry in order, read in pages so a long log never sits in memory whole."""
        after = 0
        while page := self.store.audit_entries(after, 5000):
            yield from page
            after = page[-1].seq
