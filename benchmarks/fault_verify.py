"""What the fault harness checks once the kills stop, read from the files themselves.

- **acknowledged**: every ``A <spool_id> <seq>`` line in an agent's delivery logs (the agent
  wrote it on receiving the collector's ack).
- **stored**: every ``(spool_id, agent_seq)`` row of the host in the collector's ``batches``
  (the database at any location ``collector.store.open_store`` accepts: a SQLite file, or
  the PostgreSQL database a cluster of collectors shares; the same SQL reads both).
- **lost** = acknowledged but not stored (must be 0); **duplicated** = rows beyond the first
  for one ``(host, spool_id, seq)``, plus fact-history records beyond the first for one
  change (host, view, stored seq, row identity): a batch whose effect was applied twice,
  say by two collectors racing on it, shows there even if its ``batches`` row does not
  (must be 0).
- **final state**: the digests of the agent's last spooled collection (its ``sent_digests``)
  against the collector's ``host_tables`` digests *and* digests recomputed from the rows the
  collector stored, so the rows themselves are compared, not only the labels.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from agent.collect import TableResult, table_digest
from collector.store.engine import parse_location
from collector.store.facts import host_rows

__all__ = ["AgentTally", "DeliveryRecord", "read_delivery_logs", "reading", "tally_agent"]


@dataclass(frozen=True)
class DeliveryRecord:
    """What the agent's delivery logs say: sends and acks with their times (ns)."""

    sent: dict[tuple[str, int], int]
    acked: dict[tuple[str, int], int]


def read_delivery_logs(home: Path) -> DeliveryRecord:
    sent: dict[tuple[str, int], int] = {}
    acked: dict[tuple[str, int], int] = {}
    for path in sorted(home.glob("delivery-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[0] not in {"S", "A"} or not parts[2].isdigit():
                continue  # the line a kill -9 cut short
            key, at = (parts[1], int(parts[2])), int(parts[3]) if parts[3].isdigit() else 0
            target = sent if parts[0] == "S" else acked
            target.setdefault(key, at)
    return DeliveryRecord(sent, acked)


@dataclass(frozen=True)
class AgentTally:
    name: str
    sent: int
    acknowledged: int
    stored: int
    lost: int
    duplicated: int
    #: Of ``duplicated``: fact changes recorded more than once.
    history_duplicated: int
    gap_records: int
    gap_batches: int
    epochs: int
    tables: int
    mismatched: tuple[str, ...]


def _stored_digest(conn: sqlite3.Connection, host_id: int, table: str, error: str) -> str:
    rows = [
        {column: "" if value is None else str(value) for column, value in row.items()}
        for row in host_rows(conn, host_id, table)
    ]
    return table_digest(TableResult(rows=rows, error=error))


def _final_state(
    conn: sqlite3.Connection, host_id: int, agent_digests: dict[str, str]
) -> tuple[str, ...]:
    held = {
        name: (digest, error)
        for name, digest, error in conn.execute(
            "SELECT table_name, digest, error FROM host_tables WHERE host_id = ?", (host_id,)
        )
    }
    mismatched = []
    for table, digest in sorted(agent_digests.items()):
        stored, error = held.get(table, ("", ""))
        if stored != digest or (
            not error and _stored_digest(conn, host_id, table, error) != digest
        ):
            mismatched.append(table)
    return tuple(mismatched)


@contextmanager
def reading(location: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection to the store at ``location`` that speaks sqlite3's surface with ``?``
    placeholders: a read-only ``sqlite3`` connection to a SQLite file (nothing written, not
    even a migration), or the PostgreSQL engine's own ``PgConnection`` (which translates the
    SQL), so one verification reads both engines."""
    parsed = parse_location(location)
    if parsed.engine == "postgresql":
        from collector.store.postgres import PgConnection  # psycopg only when needed

        assert parsed.url is not None
        pg = PgConnection(parsed.url, pool_size=2)
        try:
            yield cast(sqlite3.Connection, pg)
        finally:
            pg.close()
        return
    assert parsed.path is not None
    conn = sqlite3.connect(f"file:{parsed.path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def tally_agent(
    name: str,
    location: str | Path,
    uuid: str,
    record: DeliveryRecord,
    agent_digests: dict[str, str],
) -> AgentTally:
    """What happened to one agent's batches, read from the store at ``location``."""
    with reading(location) as conn:
        found = conn.execute("SELECT id FROM hosts WHERE hardware_uuid = ?", (uuid,)).fetchone()
        if found is None:
            raise LookupError(f"{name} ({uuid}) is not a host at {location}")
        host_id = int(found[0])
        rows = conn.execute(
            "SELECT spool_id, agent_seq FROM batches WHERE host_id = ?", (host_id,)
        ).fetchall()
        stored = Counter((spool or "", int(seq)) for spool, seq in rows if seq is not None)
        gap_records, gap_batches = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(batches), 0) FROM delivery_gaps WHERE host_id = ?",
            (host_id,),
        ).fetchone()
        (epochs,) = conn.execute(
            "SELECT COUNT(*) FROM spool_epochs WHERE host_id = ?", (host_id,)
        ).fetchone()
        (history_duplicated,) = conn.execute(
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM fact_history"
            " WHERE host_id = ? GROUP BY view, seq, identity_json) AS per_change",
            (host_id,),
        ).fetchone()
        mismatched = _final_state(conn, host_id, agent_digests)
    batch_duplicated = sum(count - 1 for count in stored.values())
    return AgentTally(
        name=name,
        sent=len(record.sent),
        acknowledged=len(record.acked),
        stored=len(stored),
        lost=len(set(record.acked) - set(stored)),
        duplicated=batch_duplicated + int(history_duplicated),
        history_duplicated=int(history_duplicated),
        gap_records=int(gap_records),
        gap_batches=int(gap_batches),
        epochs=int(epochs),
        tables=len(agent_digests),
        mismatched=mismatched,
    )
