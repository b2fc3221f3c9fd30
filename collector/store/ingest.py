"""Storing a batch: current facts, their row-level history, and configuration drift.

One transaction per batch holds everything the batch causes: the replaced fact rows, the
``fact_history`` rows of each tracked view that changed (``collector.tracked``), the drift
events against the host's baseline and their outbox rows. The batch is stored once per
(host, spool_id, seq), so none of this is ever recorded twice; the gap records the batch
carries are stored with it. Seqs restart with a new agent spool: ``collector.store.delivery``
maps each spool's seqs into the host's (its epochs) and refuses batches of a superseded one.

A view's old and new states are both read from the stored rows (before and after the
replacement), so they compare as SQLite typed them, whatever spelling the agent used. A
view that reads several tables (local admins) is tracked once every one of them has been
collected; until then it has no state, and its first state is not news but its baseline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from collector.drift import RowChange, diff_states, view_state
from collector.model import FactBatch, IngestOutcome, TableFacts, TableState
from collector.store.base import StoreBase, ts
from collector.store.delivery import record_gaps, stored_seq
from collector.store.drift import has_baseline, raise_config_drift, set_baseline
from collector.store.facts import host_rows, replace_host_rows
from collector.tracked import Row, TrackedView, views_for_tables
from protos.posture.v1.tables import TABLES

__all__ = ["FactsMixin"]

Rows = Mapping[str, list[dict[str, str]]]


class FactsMixin(StoreBase):
    notify_events: bool

    def apply_batch(self, host_id: int, batch: FactBatch, now: datetime) -> IngestOutcome:
        """Store a batch once: a (host, spool_id, seq) already stored changes nothing and is
        reported. The outcome's seq is the agent's, for the ack.

        A seq at or below the host's batch floor is a duplicate too: it was stored and
        acknowledged before compaction removed its record. A batch from a spool the host has
        replaced raises ``StaleSpoolError`` (nothing is written).
        """
        with self._transaction() as conn:
            seq = stored_seq(conn, host_id, batch, now)
            if self._already_stored(conn, host_id, seq):
                return IngestOutcome(seq=batch.seq, duplicate=True)
            now = self._stamp(conn, now)
            known = [table for table in batch.changed if table.name in TABLES]
            held_before = _held_tables(conn, host_id)
            stored = {table.name for table in known if not table.error}
            views = views_for_tables(stored)
            before = _source_rows(conn, host_id, views, held_before)
            stamped = replace(batch, seq=seq)
            for table in known:
                self._replace_table(conn, host_id, stamped, table)
            after = {**before, **_source_rows(conn, host_id, views, stored)}
            for view in views:
                self._track_view(conn, host_id, stamped, view, (before, held_before), after, now)
            record_gaps(conn, host_id, batch, seq - batch.seq, now)
            conn.execute(
                "INSERT INTO batches (host_id, seq, collected_at, received_at, tables_changed,"
                " spool_id, agent_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    host_id,
                    seq,
                    ts(batch.collected_at),
                    ts(now),
                    len(known),
                    batch.spool_id,
                    batch.seq,
                ),
            )
            conn.execute(
                "UPDATE hosts SET last_collected_at = MAX(COALESCE(last_collected_at, ''), ?),"
                " last_seen_at = ?, last_seq = MAX(last_seq, ?) WHERE id = ?",
                (ts(batch.collected_at), ts(now), seq, host_id),
            )
            mismatched = self._mismatched_digests(conn, host_id, batch)
        return IngestOutcome(
            seq=batch.seq,
            duplicate=False,
            changed_tables=frozenset(table.name for table in known),
            mismatched_tables=mismatched,
        )

    @staticmethod
    def _already_stored(conn: sqlite3.Connection, host_id: int, seq: int) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM batches WHERE host_id = ?1 AND seq = ?2)"
            " OR EXISTS (SELECT 1 FROM batch_floors WHERE host_id = ?1 AND seq >= ?2)",
            (host_id, seq),
        ).fetchone()
        return bool(row[0])

    def _replace_table(
        self, conn: sqlite3.Connection, host_id: int, batch: FactBatch, table: TableFacts
    ) -> None:
        if not table.error:
            replace_host_rows(conn, host_id, table.name, table.rows)
        conn.execute(
            "INSERT OR REPLACE INTO host_tables (host_id, table_name, digest, error,"
            " collected_at, seq) VALUES (?, ?, ?, ?, ?, ?)",
            (
                host_id,
                table.name,
                batch.digests.get(table.name, ""),
                table.error,
                ts(batch.collected_at),
                batch.seq,
            ),
        )

    def _track_view(
        self,
        conn: sqlite3.Connection,
        host_id: int,
        batch: FactBatch,
        view: TrackedView,
        before: tuple[Rows, set[str]],
        after: Rows,
        now: datetime,
    ) -> None:
        """Record one view's row changes in the history, then the drift they cause."""
        old_rows, held_before = before
        if not all(source in after for source in view.sources):
            return
        ready_before = held_before.issuperset(view.sources)
        old = view_state(view, _pick(old_rows, view)) if ready_before else {}
        new = view_state(view, _pick(after, view))
        changes = diff_states(view.name, old, new)
        _record_history(conn, host_id, batch, changes, now)
        if not view.alerts or not (changes or not ready_before):
            return
        if not has_baseline(conn, host_id, view.name):
            # The first state is the baseline; a host upgraded from a collector that kept
            # none takes its state before this change, so the change is still reported.
            set_baseline(conn, host_id, view.name, old if ready_before else new, now, None)
            if not ready_before:
                return
        raise_config_drift(conn, host_id, view.name, changes, now, self.notify_events)

    @staticmethod
    def _mismatched_digests(
        conn: sqlite3.Connection, host_id: int, batch: FactBatch
    ) -> frozenset[str]:
        held = dict(
            conn.execute(
                "SELECT table_name, digest FROM host_tables WHERE host_id = ?", (host_id,)
            ).fetchall()
        )
        return frozenset(
            name
            for name, digest in batch.digests.items()
            if name in TABLES and held.get(name) != digest
        )

    def table_states(self, host_id: int) -> dict[str, TableState]:
        rows = self.conn.execute(
            "SELECT table_name, digest, error, collected_at FROM host_tables WHERE host_id = ?",
            (host_id,),
        )
        return {
            name: TableState(name, digest, error, datetime.fromisoformat(collected_at))
            for name, digest, error, collected_at in rows
        }

    def host_rows(self, host_id: int, table: str) -> list[dict[str, str]]:
        return host_rows(self.conn, host_id, table)

    def batch_count(self, host_id: int) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM batches WHERE host_id = ?", (host_id,))
        return int(row.fetchone()[0])

    def stored_seqs(self, host_id: int) -> list[int]:
        rows = self.conn.execute(
            "SELECT seq FROM batches WHERE host_id = ? ORDER BY seq", (host_id,)
        )
        return [seq for (seq,) in rows]


def _held_tables(conn: sqlite3.Connection, host_id: int) -> set[str]:
    rows = conn.execute("SELECT table_name FROM host_tables WHERE host_id = ?", (host_id,))
    return {name for (name,) in rows}


def _source_rows(
    conn: sqlite3.Connection, host_id: int, views: list[TrackedView], held: set[str]
) -> dict[str, list[dict[str, str]]]:
    """The stored rows of the tables in ``held`` that the views read."""
    tables = {source for view in views for source in view.sources if source in held}
    return {table: host_rows(conn, host_id, table) for table in sorted(tables)}


def _pick(rows: Rows, view: TrackedView) -> dict[str, list[Row]]:
    return {source: list(rows.get(source, ())) for source in view.sources}


def _record_history(
    conn: sqlite3.Connection,
    host_id: int,
    batch: FactBatch,
    changes: list[RowChange],
    now: datetime,
) -> None:
    conn.executemany(
        "INSERT INTO fact_history (host_id, view, seq, collected_at, at, change,"
        " identity_json, old_json, new_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                host_id,
                change.view,
                batch.seq,
                ts(batch.collected_at),
                ts(now),
                change.change.value,
                change.identity,
                change.old,
                change.new,
            )
            for change in changes
        ],
    )
