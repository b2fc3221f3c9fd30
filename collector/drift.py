"""Drift as pure functions: row-level fact changes, deviations from a baseline, and flips.

A view's *state* maps each row identity to its compared values, both as canonical JSON, so
states from any source compare by string and store as they are. Diffing two states gives
the fact history (``added``, ``removed``, ``modified``); comparing each change with the
host's baseline gives configuration drift, and a check flipping between pass and
not-pass, or a host score falling by more than a threshold, gives compliance drift. Event
shapes follow osquery's differential results plus Wazuh FIM's ``modified`` with
``changed_fields`` (reference/compliance-formats.md §5, §7.5).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from collector.policy.model import Status
from collector.tracked import Row, TrackedView

__all__ = [
    "Change",
    "DriftEvent",
    "EventKind",
    "EventType",
    "RowChange",
    "State",
    "StoredEvent",
    "baseline_drift",
    "canonical",
    "changed_fields",
    "compliance_drift",
    "diff_states",
    "view_state",
]

#: identity (canonical JSON object) -> compared values (canonical JSON object)
State = dict[str, str]


def canonical(value: object) -> str:
    """The one JSON spelling of ``value``: equal content, equal string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def view_state(view: TrackedView, tables: Mapping[str, Sequence[Row]]) -> State:
    """The state of ``view`` given the rows of its source tables.

    Rows sharing an identity are merged: each compared column then holds the sorted
    distinct values joined by newlines, so a duplicate never hides a difference.
    """
    merged: dict[str, dict[str, set[str]]] = {}
    for row in view.rows(tables):
        if view.identity:
            identity = canonical({column: row.get(column, "") for column in view.identity})
        else:
            identity = canonical({column: value for column, value in row.items() if value != ""})
        values = merged.setdefault(identity, {column: set() for column in view.compared})
        for column in view.compared:
            values[column].add(row.get(column, ""))
    return {
        identity: canonical({column: "\n".join(sorted(v)) for column, v in values.items()})
        for identity, values in merged.items()
    }


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"


@dataclass(frozen=True)
class RowChange:
    """One row of a view changed between two collections (``old``/``new``: None = absent)."""

    view: str
    change: Change
    identity: str
    old: str | None
    new: str | None


def diff_states(view: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[RowChange]:
    """Row-level changes from ``old`` to ``new``, ordered by identity."""
    changes = []
    for identity in sorted(old.keys() | new.keys()):
        before, after = old.get(identity), new.get(identity)
        if before == after:
            continue
        change = (
            Change.ADDED if before is None else Change.REMOVED if after is None else Change.MODIFIED
        )
        changes.append(RowChange(view, change, identity, before, after))
    return changes


class EventKind(StrEnum):
    COMPLIANCE = "compliance"
    CONFIG = "config"


class EventType(StrEnum):
    CHECK_REGRESSED = "check_regressed"
    CHECK_RECOVERED = "check_recovered"
    SCORE_DROPPED = "score_dropped"
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    RESTORED = "restored"


@dataclass(frozen=True)
class DriftEvent:
    """A drift event before it is stored.

    Compliance events name a ``check_id`` (or none, for a score drop); ``old``/``new`` are
    ``{"status": ...}`` or ``{"score": ...}``. Config events name a ``view`` and row
    ``identity``; ``old`` is the baseline's values and ``new`` the host's now (JSON ``null``
    when the row is absent). ``changed_fields`` lists the compared columns that differ.
    """

    kind: EventKind
    type: EventType
    check_id: str = ""
    view: str = ""
    identity: str = "{}"
    old: str = "null"
    new: str = "null"
    changed_fields: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class StoredEvent:
    """A drift event as recorded: ``at`` is when the collector learned of it."""

    id: int
    host_id: int
    at: datetime
    event: DriftEvent


def changed_fields(old: str | None, new: str | None) -> tuple[str, ...]:
    """The compared columns whose values differ between two value objects."""
    before = json.loads(old) if old else {}
    after = json.loads(new) if new else {}
    return tuple(sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)))


def baseline_drift(changes: Iterable[RowChange], baseline: Mapping[str, str]) -> list[DriftEvent]:
    """Configuration drift events raised by ``changes`` against ``baseline`` (one view's).

    A change that leaves a row different from the baseline raises ``added``, ``removed``
    or ``modified`` (the baseline's values as ``old``); one that brings a row back to the
    baseline raises ``restored``; a change between two states that both differ from the
    baseline raises a new event too, since the deviation is not the one reported before.
    """
    events = []
    for change in changes:
        expected = baseline.get(change.identity)
        if change.new == expected:
            kind = EventType.RESTORED
        elif expected is None:
            kind = EventType.ADDED
        elif change.new is None:
            kind = EventType.REMOVED
        else:
            kind = EventType.MODIFIED
        events.append(
            DriftEvent(
                EventKind.CONFIG,
                kind,
                view=change.view,
                identity=change.identity,
                old=expected or "null",
                new=change.new or "null",
                changed_fields=changed_fields(expected, change.new) if expected else (),
            )
        )
    return events


#: Statuses a compliance flip is judged between; unknown and not-applicable never flip.
_JUDGED = frozenset({Status.PASS, Status.FAIL, Status.ERROR})


def compliance_drift(
    flips: Iterable[tuple[str, Status | None, Status]],
    old_score: float | None,
    new_score: float | None,
    score_drop_points: float,
) -> list[DriftEvent]:
    """Events for checks that flipped and for a host score that fell too far.

    ``flips`` are (check id, old status, new status). A first result (old None) is the
    baseline, not drift. A flip is pass -> fail or error (regressed) or back to pass
    (recovered); fail <-> error is not a change of compliance.
    """
    events = []
    for check_id, old, new in flips:
        if old is None or old not in _JUDGED or new not in _JUDGED:
            continue
        if (old is Status.PASS) == (new is Status.PASS):
            continue
        kind = EventType.CHECK_RECOVERED if new is Status.PASS else EventType.CHECK_REGRESSED
        events.append(
            DriftEvent(
                EventKind.COMPLIANCE,
                kind,
                check_id=check_id,
                old=canonical({"status": old.value}),
                new=canonical({"status": new.value}),
            )
        )
    if (
        old_score is not None
        and new_score is not None
        and old_score - new_score > score_drop_points
    ):
        events.append(
            DriftEvent(
                EventKind.COMPLIANCE,
                EventType.SCORE_DROPPED,
                old=canonical({"score": round(old_score, 2)}),
                new=canonical({"score": round(new_score, 2)}),
                detail=f"host score fell {old_score - new_score:.1f} points",
            )
        )
    return events
