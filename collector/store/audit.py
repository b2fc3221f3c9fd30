"""Storage of the hash-chained audit log: appended to, never updated or deleted.

The store offers no way to change an entry, and retention never touches the table. The next
entry's link is read inside the appending transaction (a write transaction, so appends from
the server and from CLI processes are serialised by the database) and the hash is computed
there, so no two entries can claim the same predecessor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from collector.audit import GENESIS, AuditEntry, entry_hash
from collector.store.base import StoreBase, dt, ts

__all__ = ["AUDIT_SCHEMA", "AuditMixin"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in ``schema``.
AUDIT_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail_json TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
)

_COLUMNS = "seq, at, actor, action, target, outcome, detail_json, prev_hash, hash"


class AuditMixin(StoreBase):
    def append_audit(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        detail: Mapping[str, object],
        now: datetime,
    ) -> AuditEntry:
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            last = conn.execute(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
            # The stored text is what gets hashed on verification: round-trip it once.
            detail = json.loads(json.dumps(dict(detail), sort_keys=True, default=str))
            digest = entry_hash(seq, now, actor, action, target, outcome, detail, prev_hash)
            conn.execute(
                f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, ts(now), actor, action, target, outcome,
                 json.dumps(detail, sort_keys=True), prev_hash, digest),
            )  # fmt: skip
        return AuditEntry(seq, now, actor, action, target, outcome, detail, prev_hash, digest)

    def audit_entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries after ``after_seq`` in chain order (``limit`` of them, or all)."""
        query = f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq"
        if limit is None:
            rows = self.conn.execute(query, (after_seq,)).fetchall()
        else:
            rows = self.conn.execute(f"{query} LIMIT ?", (after_seq, limit)).fetchall()
        return [_entry(row) for row in rows]

    def audit_head(self) -> AuditEntry | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return _entry(row) if row else None


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    at = dt(row[1])
    assert at is not None
    return AuditEntry(row[0], at, row[2], row[3], row[4], row[5], json.loads(row[6]), *row[7:])
