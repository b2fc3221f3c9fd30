"""Drift events, baselines and the webhook outbox.

Events are written in the same transaction as the facts or results that raised them, and
so is their outbox row when notifications are on: an event is never recorded without its
notification being queued, nor queued twice (a batch is stored once per (host, seq)).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.drift import (
    DriftEvent,
    EventKind,
    EventType,
    RowChange,
    State,
    StoredEvent,
    baseline_drift,
    diff_states,
    view_state,
)
from collector.store.base import StoreBase, ts
from collector.store.facts import host_rows
from collector.tracked import TRACKED

__all__ = [
    "DriftMixin",
    "EventFilter",
    "Pending",
    "has_baseline",
    "insert_events",
    "raise_config_drift",
    "set_baseline",
]

_EVENT_COLUMNS = (
    "id, host_id, at, kind, type, check_id, view, identity_json, old_json, new_json,"
    " changed_fields_json, detail"
)


def insert_events(
    conn: sqlite3.Connection,
    host_id: int,
    at: datetime,
    events: Iterable[DriftEvent],
    notify: bool,
) -> int:
    """Record ``events`` (and queue them for the webhook when ``notify``); returns how many."""
    count = 0
    for event in events:
        cursor = conn.execute(
            "INSERT INTO drift_events (host_id, at, kind, type, check_id, view, identity_json,"
            " old_json, new_json, changed_fields_json, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                host_id,
                ts(at),
                event.kind.value,
                event.type.value,
                event.check_id,
                event.view,
                event.identity,
                event.old,
                event.new,
                json.dumps(list(event.changed_fields)),
                event.detail,
            ),
        )
        if notify:
            conn.execute(
                "INSERT INTO outbox (event_id, next_attempt_at) VALUES (?, ?)",
                (cursor.lastrowid, ts(at)),
            )
        count += 1
    return count


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    event_id, host_id, at, kind, kind_type, check_id, view, identity, old, new = row[:10]
    event = DriftEvent(
        kind=EventKind(kind),
        type=EventType(kind_type),
        check_id=check_id,
        view=view,
        identity=identity,
        old=old,
        new=new,
        changed_fields=tuple(json.loads(row[10])),
        detail=row[11],
    )
    return StoredEvent(event_id, host_id, datetime.fromisoformat(at), event)


@dataclass(frozen=True)
class EventFilter:
    """Which events to list: ``host_ids`` None means every host."""

    host_ids: frozenset[int] | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: EventKind | None = None


@dataclass(frozen=True)
class Pending:
    """An event awaiting delivery, with the attempts made so far."""

    event: StoredEvent
    attempts: int


class DriftMixin(StoreBase):
    #: Queue new events for the webhook (set when ``serve`` has a webhook configured).
    notify_events: bool = False

    def drift_events(self, where: EventFilter) -> list[StoredEvent]:
        clauses, params = ["1 = 1"], []
        if where.since is not None:
            clauses.append("at >= ?")
            params.append(ts(where.since))
        if where.until is not None:
            clauses.append("at <= ?")
            params.append(ts(where.until))
        if where.kind is not None:
            clauses.append("kind = ?")
            params.append(where.kind.value)
        if where.host_ids is not None:
            clauses.append("host_id IN (SELECT CAST(value AS INTEGER) FROM json_each(?))")
            params.append(json.dumps(sorted(where.host_ids)))
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM drift_events WHERE {' AND '.join(clauses)} ORDER BY id",
            params,
        )
        return [_stored_event(row) for row in rows]

    # Baselines --------------------------------------------------------------------------

    def current_view_states(self, host_id: int) -> dict[str, State]:
        """The host's alerting views as its stored facts stand now (views it has facts for)."""
        held = {name for (name,) in self.conn.execute(
            "SELECT table_name FROM host_tables WHERE host_id = ?", (host_id,)
        )}  # fmt: skip
        states = {}
        for view in TRACKED:
            if view.alerts and held.issuperset(view.sources):
                tables = {source: host_rows(self.conn, host_id, source) for source in view.sources}
                states[view.name] = view_state(view, tables)
        return states

    def baseline(self, host_id: int, view: str) -> State:
        rows = self.conn.execute(
            "SELECT identity_json, value_json FROM baseline_rows WHERE host_id = ? AND view = ?",
            (host_id, view),
        )
        return dict(rows.fetchall())

    def approve_baseline(self, host_id: int, approved_by: str, now: datetime) -> int:
        """Make the host's current state its baseline; returns how many views it covers."""
        with self._transaction() as conn:
            now = self._stamp(conn, now)
            states = self.current_view_states(host_id)
            for view, state in states.items():
                set_baseline(conn, host_id, view, state, now, approved_by)
            conn.execute(
                "INSERT INTO baseline_approvals (host_id, at, approved_by, views)"
                " VALUES (?, ?, ?, ?)",
                (host_id, ts(now), approved_by, len(states)),
            )
        return len(states)

    def baseline_deviations(self, host_id: int) -> list[DriftEvent]:
        """How the host's tracked configuration differs from its baseline right now."""
        deviations: list[DriftEvent] = []
        for view, state in sorted(self.current_view_states(host_id).items()):
            expected = self.baseline(host_id, view)
            changes = diff_states(view, expected, state)
            deviations += baseline_drift(changes, expected)
        return deviations

    def baseline_set_at(self, host_id: int) -> dict[str, tuple[datetime, str | None]]:
        """View -> (when its baseline was set, who approved it; None = first state)."""
        rows = self.conn.execute(
            "SELECT view, set_at, set_by FROM baselines WHERE host_id = ?", (host_id,)
        )
        return {view: (datetime.fromisoformat(at), by) for view, at, by in rows}

    # Outbox -----------------------------------------------------------------------------

    def pending_notifications(self, now: datetime, limit: int = 100) -> list[Pending]:
        """Undelivered events due for an attempt at ``now``, oldest first."""
        rows = self.conn.execute(
            f"SELECT {', '.join('e.' + c.strip() for c in _EVENT_COLUMNS.split(','))},"
            " o.attempts FROM outbox o JOIN drift_events e ON e.id = o.event_id"
            " WHERE o.delivered_at IS NULL AND o.next_attempt_at <= ?"
            " ORDER BY o.event_id LIMIT ?",
            (ts(now), limit),
        )
        return [Pending(_stored_event(row[:-1]), int(row[-1])) for row in rows]

    def mark_delivered(self, event_id: int, now: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = ''"
                " WHERE event_id = ?",
                (ts(now), event_id),
            )

    def mark_failed(self, event_id: int, error: str, retry_at: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                " WHERE event_id = ?",
                (error[:500], ts(retry_at), event_id),
            )

    def outbox_status(self) -> dict[int, tuple[int, datetime | None, str]]:
        """Event id -> (attempts, delivered at, last error), for events queued to notify."""
        rows = self.conn.execute(
            "SELECT event_id, attempts, delivered_at, last_error FROM outbox ORDER BY event_id"
        )
        return {
            event_id: (attempts, datetime.fromisoformat(at) if at else None, error)
            for event_id, attempts, at, error in rows
        }


def set_baseline(
    conn: sqlite3.Connection,
    host_id: int,
    view: str,
    state: State,
    now: datetime,
    set_by: str | None,
) -> None:
    conn.execute("DELETE FROM baseline_rows WHERE host_id = ? AND view = ?", (host_id, view))
    conn.executemany(
        "INSERT INTO baseline_rows (host_id, view, identity_json, value_json) VALUES (?, ?, ?, ?)",
        [(host_id, view, identity, value) for identity, value in state.items()],
    )
    conn.execute(
        "INSERT OR REPLACE INTO baselines (host_id, view, set_at, set_by) VALUES (?, ?, ?, ?)",
        (host_id, view, ts(now), set_by),
    )


def has_baseline(conn: sqlite3.Connection, host_id: int, view: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM baselines WHERE host_id = ? AND view = ?", (host_id, view)
    ).fetchone()
    return row is not None


def raise_config_drift(
    conn: sqlite3.Connection,
    host_id: int,
    view: str,
    changes: Sequence[RowChange],
    now: datetime,
    notify: bool,
) -> int:
    """Record the drift events ``changes`` cause against the host's baseline of ``view``."""
    identities = json.dumps([change.identity for change in changes])
    expected = dict(
        conn.execute(
            "SELECT identity_json, value_json FROM baseline_rows WHERE host_id = ? AND view = ?"
            " AND identity_json IN (SELECT value FROM json_each(?))",
            (host_id, view, identities),
        ).fetchall()
    )
    return insert_events(conn, host_id, now, baseline_drift(changes, expected), notify)
