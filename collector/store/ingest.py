"""Storing a batch: current facts, their row-level history, and configuration drift.

One transaction per batch holds everything the batch causes: the fact rows that changed,
the ``fact_history`` rows of each tracked view that changed (``collector.tracked``), the
drift events against the host's baseline and their outbox rows. The batch is stored once
per (host, spool_id, seq), so none of this is ever recorded twice; the gap records the batch
carries are stored with it. Seqs restart with a new agent spool: ``collector.store.delivery``
maps each spool's seqs into the host's (its epochs) and refuses batches of a superseded one.

**Cost.** A delta report mostly repeats what is stored (a few processes come and go), so
each table's stored rows are read once, as tuples, and only the difference is written
(``apply_host_rows``); the views are compared on tuples too (``collector.drift.Keyed``)
and only the rows that changed are spelled as JSON. A view none of whose tables changed
is not looked at. **Group commit** (``apply_batches``): batches that queued for the writer
are stored in one transaction, each in a savepoint of its own, so a group pays one fsync;
every batch of it is acknowledged after that commit, never before.

**Several collectors** (PostgreSQL): the transaction first takes the host's row lock (an
``UPDATE`` of ``hosts``), so batches of one host are stored one after another whichever
collector receives them, and claims ``(host, seq)`` with ``ON CONFLICT DO NOTHING``: of two
collectors storing the same batch at once, the second waits for the first and then finds
a duplicate, never a unique-key error.

A view's old and new states are both taken from the stored rows (before and after the
change), so they compare as SQLite typed them, whatever spelling the agent used. A view
that reads several tables (local admins) is tracked once every one of them has been
collected; until then it has no state, and its first state is not news but its baseline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from collector.drift import (
    Keyed,
    RowChange,
    diff_keyed,
    full_state,
    keyed_state,
    keyed_state_of_values,
)
from collector.model import FactBatch, IngestOutcome, TableFacts, TableState
from collector.store.base import StoreBase, ts
from collector.store.delivery import record_gaps, stored_seq
from collector.store.drift import has_baseline, raise_config_drift, set_baseline
from collector.store.facts import (
    TableChange,
    Values,
    apply_host_rows,
    as_dicts,
    column_names,
    host_rows,
    host_values,
)
from collector.tracked import TrackedView, views_for_tables
from protos.posture.v1.tables import TABLES

__all__ = ["FactsMixin"]


class FactsMixin(StoreBase):
    notify_events: bool
    engine: str

    def apply_batch(self, host_id: int, batch: FactBatch, now: datetime) -> IngestOutcome:
        """Store a batch once: a (host, spool_id, seq) already stored changes nothing and is
        reported. The outcome's seq is the agent's, for the ack.

        A seq at or below the host's batch floor is a duplicate too: it was stored and
        acknowledged before compaction removed its record. A batch from a spool the host has
        replaced raises ``StaleSpoolError`` (nothing is written).
        """
        with self._transaction() as conn:
            return self._store_batch(conn, host_id, batch, now)

    def apply_batches(
        self, batches: Sequence[tuple[int, FactBatch]], now: datetime
    ) -> list[IngestOutcome | Exception]:
        """Store several hosts' batches in one transaction: one commit, so one fsync, for
        all of them (group commit; every one is durable when this returns, and only then
        may any be acknowledged). Each batch is stored as ``apply_batch`` stores it, in a
        savepoint of its own: one that fails (``StaleSpoolError``, a constraint) is rolled
        back alone and its exception is returned in its place. A failed commit raises, and
        then none is stored.
        """
        outcomes: list[IngestOutcome | Exception] = []
        with self._transaction() as conn:
            for host_id, batch in batches:
                conn.execute("SAVEPOINT posture_batch")
                try:
                    outcomes.append(self._store_batch(conn, host_id, batch, now))
                except Exception as error:  # returned to its caller, not swallowed
                    conn.execute("ROLLBACK TO SAVEPOINT posture_batch")
                    outcomes.append(error)
                conn.execute("RELEASE SAVEPOINT posture_batch")
        return outcomes

    @contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Commits inside skip their fsync (SQLite: ``synchronous=NORMAL`` in WAL mode);
        the next ordinary commit, which does sync, makes them durable too.

        For what can be recomputed: evaluation results (``serve`` re-evaluates every host
        when it starts), never a batch, whose ack must follow a durable commit. A process
        killed loses nothing either way; only a power cut or kernel crash can take the
        last such commits, and with them nothing acknowledged. On PostgreSQL this changes
        nothing.
        """
        if self.engine != "sqlite":
            yield
            return
        (level,) = self.conn.execute("PRAGMA synchronous").fetchone()
        self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA synchronous={int(level)}")

    def _store_batch(
        self, conn: sqlite3.Connection, host_id: int, batch: FactBatch, now: datetime
    ) -> IngestOutcome:
        duplicate = IngestOutcome(seq=batch.seq, duplicate=True)
        _lock_host(conn, host_id)
        seq = stored_seq(conn, host_id, batch, now)
        if self._already_stored(conn, host_id, seq):
            return duplicate
        now = self._stamp(conn, now)
        known = [table for table in batch.changed if table.name in TABLES]
        if not _claim(conn, host_id, seq, batch, len(known), now):
            return duplicate
        held, held_columns = _held_tables(conn, host_id)
        stamped = replace(batch, seq=seq)
        changes = {
            table.name: apply_host_rows(
                conn, host_id, table.name, table.rows, held_columns.get(table.name)
            )
            for table in known
            if not table.error
        }
        _write_table_states(conn, host_id, stamped, known, changes)
        _Tracker(conn, host_id, stamped, now, set(held), changes).track(self.notify_events)
        record_gaps(conn, host_id, batch, seq - batch.seq, now)
        conn.execute(
            "UPDATE hosts SET last_collected_at = MAX(COALESCE(last_collected_at, ''), ?),"
            " last_seen_at = ?, last_seq = MAX(last_seq, ?) WHERE id = ?",
            (ts(batch.collected_at), ts(now), seq, host_id),
        )
        held.update((table.name, batch.digests.get(table.name, "")) for table in known)
        return IngestOutcome(
            seq=batch.seq,
            duplicate=False,
            changed_tables=frozenset(table.name for table in known),
            mismatched_tables=frozenset(
                name
                for name, digest in batch.digests.items()
                if name in TABLES and held.get(name) != digest
            ),
        )

    @staticmethod
    def _already_stored(conn: sqlite3.Connection, host_id: int, seq: int) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM batches WHERE host_id = ?1 AND seq = ?2)"
            " OR EXISTS (SELECT 1 FROM batch_floors WHERE host_id = ?1 AND seq >= ?2)",
            (host_id, seq),
        ).fetchone()
        return bool(row[0])

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


def _lock_host(conn: sqlite3.Connection, host_id: int) -> None:
    """Take the host's row lock for the transaction (PostgreSQL: batches of one host are
    stored one at a time, by however many collectors; SQLite has one writer anyway)."""
    conn.execute("UPDATE hosts SET last_seq = last_seq WHERE id = ?", (host_id,))


def _claim(
    conn: sqlite3.Connection, host_id: int, seq: int, batch: FactBatch, tables: int, now: datetime
) -> bool:
    """Record the batch as stored; False when it is already there (a collector racing us
    stored it first: we waited for its commit and now see a duplicate). Both keys of
    ``batches`` mean the same batch: (host, seq) and (host, spool, agent seq)."""
    cursor = conn.execute(
        "INSERT INTO batches (host_id, seq, collected_at, received_at, tables_changed,"
        " spool_id, agent_seq) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (host_id, seq, ts(batch.collected_at), ts(now), tables, batch.spool_id, batch.seq),
    )
    return cursor.rowcount != 0


def _held_tables(
    conn: sqlite3.Connection, host_id: int
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The host's tables: their digests, and the columns their stored rows may fill where
    that is known (``apply_host_rows``' ``held``).

    ``stored_columns`` is ``"<seq>:<columns>"``, written with the rows of batch ``seq``, and
    trusted only while the table's ``seq`` is still that one: a failed collection (which
    keeps the rows) or a collector older than the column (a rolling upgrade, a downgrade)
    moves ``seq`` on without it, and the rows are then read with their NULL test.
    """
    rows = conn.execute(
        "SELECT table_name, digest, seq, stored_columns FROM host_tables WHERE host_id = ?",
        (host_id,),
    ).fetchall()
    digests = {name: digest for name, digest, _, _ in rows}
    columns = {}
    for name, _, seq, stored in rows:
        written, _, names = (stored or "").partition(":")
        if written == str(seq):
            columns[name] = names.split(",") if names else []
    return digests, columns


def _write_table_states(
    conn: sqlite3.Connection,
    host_id: int,
    batch: FactBatch,
    tables: Sequence[TableFacts],
    changes: Mapping[str, TableChange],
) -> None:
    """Each table's digest, error and time; and, for the tables whose rows were stored,
    the columns those rows fill (``_held_tables``; a table whose probe failed keeps its rows,
    and its columns become unknown)."""
    conn.executemany(
        "INSERT INTO host_tables (host_id, table_name, digest, error, collected_at, seq,"
        " stored_columns) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host_id, table_name)"
        " DO UPDATE SET digest = excluded.digest, error = excluded.error,"
        " collected_at = excluded.collected_at, seq = excluded.seq,"
        " stored_columns = excluded.stored_columns",
        [
            (
                host_id,
                table.name,
                batch.digests.get(table.name, ""),
                table.error,
                ts(batch.collected_at),
                batch.seq,
                f"{batch.seq}:{','.join(changes[table.name].filled)}"
                if table.name in changes
                else None,
            )
            for table in tables
        ],
    )


class _Tracker:
    """The fact history and configuration drift one batch causes, view by view.

    ``held`` names the tables the host had before the batch; ``changes`` the batch's
    stored tables with their rows before and after. A view's other sources are read from
    the store once, when a view needs them.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        host_id: int,
        batch: FactBatch,
        now: datetime,
        held: set[str],
        changes: Mapping[str, TableChange],
    ) -> None:
        self.conn = conn
        self.host_id = host_id
        self.batch = batch
        self.now = now
        self.held = held
        self.changes = changes
        self._unchanged: dict[str, list[Values]] = {}

    def track(self, notify: bool) -> None:
        for view in views_for_tables(set(self.changes)):
            if all(source in self.held or source in self.changes for source in view.sources):
                self._track_view(view, notify)

    def _track_view(self, view: TrackedView, notify: bool) -> None:
        """Record one view's row changes in the history, then the drift they cause."""
        ready_before = self.held.issuperset(view.sources)
        touched = any(self.changes[s].changed for s in view.sources if s in self.changes)
        if ready_before and not touched:
            return
        old = self._keyed(view, before=True) if ready_before else {}
        new = self._keyed(view, before=False)
        changes = diff_keyed(view, old, new)
        _record_history(self.conn, self.host_id, self.batch, changes, self.now)
        if not view.alerts or not (changes or not ready_before):
            return
        conn, host_id, now = self.conn, self.host_id, self.now
        if not has_baseline(conn, host_id, view.name):
            # The first state is the baseline; a host upgraded from a collector that kept
            # none takes its state before this change, so the change is still reported.
            state = full_state(view, old if ready_before else new)
            set_baseline(conn, host_id, view.name, state, now, None)
            if not ready_before:
                return
        raise_config_drift(conn, host_id, view.name, changes, now, notify)

    def _keyed(self, view: TrackedView, *, before: bool) -> Keyed:
        if view.derive is None:
            columns, values = self._values(view.sources[0], before)
            return keyed_state_of_values(view, columns, values)
        tables = {
            source: as_dicts(*self._values(source, before))
            for source in view.sources
            if source in self.held or source in self.changes
        }
        return keyed_state(view, tables)

    def _values(self, table: str, before: bool) -> tuple[tuple[str, ...], list[Values]]:
        """The columns read of ``table`` and its rows before or after the batch."""
        change = self.changes.get(table)
        if change is not None:
            return change.columns, change.before if before else change.after
        if table not in self._unchanged:
            self._unchanged[table] = host_values(self.conn, self.host_id, table)
        return column_names(table), self._unchanged[table]


def _record_history(
    conn: sqlite3.Connection,
    host_id: int,
    batch: FactBatch,
    changes: list[RowChange],
    now: datetime,
) -> None:
    if not changes:
        return
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
