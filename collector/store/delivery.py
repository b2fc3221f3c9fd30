"""Storage of delivery epochs and gaps: which spool a host's seqs come from, and what its
agent could not deliver.

**Epochs.** ``batches`` is keyed ``(host_id, seq)``. An agent whose spool is replaced (a
reinstall, a lost or corrupt spool) starts again at seq 1 under a new ``spool_id``. The first
batch of a new spool starts a new epoch whose ``base_seq`` is the host's highest stored seq,
and a batch is stored under ``base_seq + its seq``: the host's stored seqs keep increasing, the
history and compaction floors that order by them keep working, and each ``(host, spool_id,
seq)`` is stored once (``batches_spool_seq`` enforces it). The superseded epoch is closed: a
late batch from it raises ``StaleSpoolError`` and is refused, not acknowledged (see
``collector.delivery``). A host's first spool gets base 0, so seqs stored before agents sent
spool ids (and agents upgraded in place, which keep their spool and seqs) carry on; a
legacy agent's empty spool id is adopted by the first real one the same way.

**Gaps.** Stored as the agent reports them, minus batches of the run the collector did store
(a batch in flight when the spool dropped it). A longer report of the same run (the agent
merged more drops into it before delivering) replaces the shorter one.

DDL is portable (SQLite and PostgreSQL); so is every statement here.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from collector.delivery import StaleSpoolError
from collector.model import DeliveryGap, FactBatch, SpoolEpoch
from collector.store.base import StoreBase, dt, ts

__all__ = ["DELIVERY_SCHEMA", "DeliveryMixin", "record_gaps", "stored_seq"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
DELIVERY_SCHEMA: tuple[str, ...] = (
    "ALTER TABLE batches ADD COLUMN spool_id TEXT",
    "ALTER TABLE batches ADD COLUMN agent_seq BIGINT",
    "CREATE UNIQUE INDEX batches_spool_seq ON batches (host_id, spool_id, agent_seq)",
    """CREATE TABLE spool_epochs (
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        spool_id TEXT NOT NULL,
        base_seq BIGINT NOT NULL,
        started_at TEXT NOT NULL,
        superseded_at TEXT,
        PRIMARY KEY (host_id, spool_id)
    )""",
    """CREATE TABLE delivery_gaps (
        id INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        spool_id TEXT NOT NULL,
        first_seq BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        batches INTEGER NOT NULL,
        first_collected_at TEXT NOT NULL,
        last_collected_at TEXT NOT NULL,
        reported_seq BIGINT NOT NULL,
        received_at TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX delivery_gaps_run"
    " ON delivery_gaps (host_id, spool_id, first_seq, first_collected_at)",
)


def _epoch(row: tuple[str, int, str, str | None]) -> SpoolEpoch:
    spool_id, base, started, superseded = row
    return SpoolEpoch(spool_id, int(base), datetime.fromisoformat(started), dt(superseded))


def stored_seq(conn: sqlite3.Connection, host_id: int, batch: FactBatch, now: datetime) -> int:
    """The seq ``batch`` is stored under (inside the ingest transaction); a new spool
    starts a new epoch, a superseded one raises ``StaleSpoolError``.

    Ingest holds the host's row lock (``collector.store.ingest``), so collectors sharing
    PostgreSQL do not race here; should one start the same epoch anyway, the other takes
    its base rather than failing on the key."""
    rows = conn.execute(
        "SELECT spool_id, base_seq, started_at, superseded_at FROM spool_epochs"
        " WHERE host_id = ? AND (spool_id = ? OR superseded_at IS NULL)",
        (host_id, batch.spool_id),
    ).fetchall()
    epochs = [_epoch(row) for row in rows]
    current = next((e for e in epochs if e.superseded_at is None), None)
    if current is not None and current.spool_id == batch.spool_id:
        return current.base_seq + batch.seq
    if current is not None and batch.spool_id in {e.spool_id for e in epochs}:
        raise StaleSpoolError(host_id, batch.spool_id, batch.seq, current)
    if current is None:
        base = 0
    elif current.spool_id == "":
        _adopt_legacy(conn, host_id, batch.spool_id)
        return current.base_seq + batch.seq
    else:
        base = int(
            conn.execute("SELECT last_seq FROM hosts WHERE id = ?", (host_id,)).fetchone()[0]
        )
        conn.execute(
            "UPDATE spool_epochs SET superseded_at = ? WHERE host_id = ? AND spool_id = ?"
            " AND superseded_at IS NULL",
            (ts(now), host_id, current.spool_id),
        )
    inserted = conn.execute(
        "INSERT INTO spool_epochs (host_id, spool_id, base_seq, started_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (host_id, spool_id) DO NOTHING",
        (host_id, batch.spool_id, base, ts(now)),
    ).rowcount
    if not inserted:  # another collector started this epoch first: its base stands
        base = int(
            conn.execute(
                "SELECT base_seq FROM spool_epochs WHERE host_id = ? AND spool_id = ?",
                (host_id, batch.spool_id),
            ).fetchone()[0]
        )
    return base + batch.seq


def _adopt_legacy(conn: sqlite3.Connection, host_id: int, spool_id: str) -> None:
    """An agent that sent no spool id now sends one: the same spool, upgraded in place."""
    for table in ("spool_epochs", "batches"):
        conn.execute(
            f"UPDATE {table} SET spool_id = ? WHERE host_id = ? AND spool_id = ''",
            (spool_id, host_id),
        )


def record_gaps(
    conn: sqlite3.Connection, host_id: int, batch: FactBatch, base: int, now: datetime
) -> int:
    """Store the batch's gap records; returns the batches they count as missing."""
    missing_total = 0
    for gap in batch.gaps:
        missing = gap.batches
        if gap.first_seq:
            stored = conn.execute(
                "SELECT COUNT(*) FROM batches WHERE host_id = ? AND seq BETWEEN ? AND ?",
                (host_id, base + gap.first_seq, base + gap.last_seq),
            ).fetchone()[0]
            missing = min(gap.batches, gap.last_seq - gap.first_seq + 1 - int(stored))
        if missing > 0:
            _upsert_gap(conn, host_id, batch, gap, missing, now)
            missing_total += missing
    return missing_total


def _upsert_gap(
    conn: sqlite3.Connection,
    host_id: int,
    batch: FactBatch,
    gap: DeliveryGap,
    missing: int,
    now: datetime,
) -> None:
    key = (host_id, batch.spool_id, gap.first_seq, ts(gap.first_collected_at))
    values = (gap.last_seq, missing, ts(gap.last_collected_at), batch.seq, ts(now))
    updated = conn.execute(
        "UPDATE delivery_gaps SET last_seq = ?, batches = ?, last_collected_at = ?,"
        " reported_seq = ?, received_at = ? WHERE host_id = ? AND spool_id = ?"
        " AND first_seq = ? AND first_collected_at = ? AND batches < ?",
        (*values, *key, missing),
    ).rowcount
    if updated:
        return
    conn.execute(
        "INSERT INTO delivery_gaps (host_id, spool_id, first_seq, first_collected_at,"
        " last_seq, batches, last_collected_at, reported_seq, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (host_id, spool_id, first_seq, first_collected_at) DO NOTHING",
        (*key, *values),
    )


class DeliveryMixin(StoreBase):
    """Reads of delivery epochs and gaps, for the host view and the fault harness."""

    def delivery_gaps(self, host_id: int) -> list[DeliveryGap]:
        rows = self.conn.execute(
            "SELECT first_seq, last_seq, batches, first_collected_at, last_collected_at"
            " FROM delivery_gaps WHERE host_id = ? ORDER BY first_collected_at, first_seq",
            (host_id,),
        )
        return [
            DeliveryGap(
                first, last, count, datetime.fromisoformat(start), datetime.fromisoformat(end)
            )
            for first, last, count, start, end in rows
        ]

    def spool_epochs(self, host_id: int) -> list[SpoolEpoch]:
        rows = self.conn.execute(
            "SELECT spool_id, base_seq, started_at, superseded_at FROM spool_epochs"
            " WHERE host_id = ? ORDER BY base_seq, started_at",
            (host_id,),
        )
        return [_epoch(row) for row in rows]

    def delivered(self, host_id: int) -> list[tuple[str, int]]:
        """Every stored ``(spool_id, agent seq)`` of the host still on record."""
        rows = self.conn.execute(
            "SELECT spool_id, agent_seq FROM batches WHERE host_id = ? ORDER BY seq",
            (host_id,),
        )
        return [(spool_id or "", int(seq)) for spool_id, seq in rows if seq is not None]
