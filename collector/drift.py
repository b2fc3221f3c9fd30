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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from operator import itemgetter
from typing import Any, cast

from collector.policy.model import Status
from collector.tracked import Row, TrackedView
from protos.posture.v1.tables import TABLES, Column

__all__ = [
    "Change",
    "DriftEvent",
    "EventKind",
    "EventType",
    "Keyed",
    "RowChange",
    "State",
    "StoredEvent",
    "baseline_drift",
    "canonical",
    "changed_fields",
    "compliance_drift",
    "diff_keyed",
    "diff_states",
    "full_state",
    "keyed_state",
    "keyed_state_of_values",
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
    return full_state(view, keyed_state(view, tables))


#: A view's state before it is spelled as JSON: identity key -> compared values (joined as
#: ``view_state`` joins them). Two keyed states of one view compare exactly as their
#: ``view_state`` spellings do; building one costs a tuple per row instead of two JSON dumps.
Keyed = dict[tuple[Any, ...], tuple[str, ...]]
Texts = tuple[str, ...]


def keyed_state(view: TrackedView, tables: Mapping[str, Sequence[Row]]) -> Keyed:
    """``view``'s keyed state from its sources' rows (mappings of text values)."""
    identity = view.identity
    compared = view.compared
    return _merged(
        (
            tuple(row.get(column, "") for column in identity)
            if identity
            else tuple(sorted((column, value) for column, value in row.items() if value != "")),
            tuple(row.get(column, "") for column in compared),
        )
        for row in view.rows(tables)
    )


def keyed_state_of_values(
    view: TrackedView, columns: Sequence[str], values: Iterable[Sequence[Any]]
) -> Keyed:
    """``view``'s keyed state from its single source's rows as value tuples over
    ``columns`` (text; None for NULL; numbers only in the catalogue's INTEGER and REAL
    columns; a column not in ``columns`` is NULL), without making a mapping per row.
    Views that derive their rows (``view.derive``) need ``keyed_state``."""
    if view.derive is not None:
        raise ValueError(f"view {view.name} derives its rows: use keyed_state")
    if not view.identity:
        return _merged((tuple(sorted(_pairs(columns, row))), ()) for row in values)
    catalogue = {column.name: column for column in TABLES[view.sources[0]].columns}
    texts = _texts([catalogue[name] for name in columns], (*view.identity, *view.compared))
    width = len(view.identity)
    return _merged((text[:width], text[width:]) for text in map(texts, values))


def _texts(columns: Sequence[Column], names: Sequence[str]) -> Callable[[Sequence[Any]], Texts]:
    """A function giving a row's values of ``names`` as ``host_rows`` spells them ("" for
    NULL or a column the table lacks). The common case, text columns only, costs one
    ``itemgetter`` call and a membership test per row."""
    index = {column.name: position for position, column in enumerate(columns)}
    positions = [index.get(name) for name in names]
    textual = all(
        position is not None and columns[position].sql_type == "TEXT" for position in positions
    )
    if not textual or not positions:
        return lambda row: tuple(_text(row, position) for position in positions)
    picked = cast(list[int], positions)
    get = itemgetter(*picked) if len(picked) > 1 else lambda row: (row[picked[0]],)

    def texts(row: Sequence[Any]) -> Texts:
        found: Texts = get(row)
        return found if None not in found else tuple("" if v is None else v for v in found)

    return texts


def _text(row: Sequence[Any], position: int | None) -> str:
    """A stored value as ``host_rows`` spells it ("" for NULL or a column the table lacks)."""
    if position is None:
        return ""
    value = row[position]
    return "" if value is None else value if type(value) is str else str(value)


def _pairs(columns: Sequence[str], row: Sequence[object]) -> Iterator[tuple[str, str]]:
    for column, value in zip(columns, row, strict=True):
        if value is not None and (text := str(value)) != "":
            yield column, text


def _merged(rows: Iterable[tuple[tuple[Any, ...], tuple[str, ...]]]) -> Keyed:
    """Identity -> values, merging rows that share an identity (``view_state``'s rule)."""
    state: Keyed = {}
    shared: dict[tuple[Any, ...], list[tuple[str, ...]]] = {}
    for identity, values in rows:
        first = state.setdefault(identity, values)
        if first is not values:
            shared.setdefault(identity, [first]).append(values)
    for identity, all_values in shared.items():
        state[identity] = tuple(
            "\n".join(sorted(set(column))) for column in zip(*all_values, strict=True)
        )
    return state


def full_state(view: TrackedView, keyed: Keyed) -> State:
    """A keyed state spelled as ``State`` (canonical JSON identities and values)."""
    return {_identity_json(view, key): _values_json(view, values) for key, values in keyed.items()}


def _identity_json(view: TrackedView, key: tuple[Any, ...]) -> str:
    return canonical(dict(zip(view.identity, key, strict=True)) if view.identity else dict(key))


def _values_json(view: TrackedView, values: tuple[str, ...]) -> str:
    return canonical(dict(zip(view.compared, values, strict=True)))


def diff_keyed(view: TrackedView, old: Keyed, new: Keyed) -> list[RowChange]:
    """Row-level changes from ``old`` to ``new`` (``diff_states``'s result, spelling only
    the rows that changed)."""
    changes: list[tuple[tuple[Any, ...], tuple[str, ...] | None, tuple[str, ...] | None]] = []
    for key, values in new.items():
        before = old.get(key)
        if before != values:
            changes.append((key, before, values))
    changes += [(key, values, None) for key, values in old.items() if key not in new]
    spelled = [
        (
            _identity_json(view, key),
            None if before is None else _values_json(view, before),
            None if after is None else _values_json(view, after),
        )
        for key, before, after in changes
    ]
    return [
        RowChange(view.name, _kind(before, after), identity, before, after)
        for identity, before, after in sorted(spelled, key=lambda change: change[0])
    ]


def _kind(before: str | None, after: str | None) -> Change:
    return Change.ADDED if before is None else Change.REMOVED if after is None else Change.MODIFIED


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
        if before != after:
            changes.append(RowChange(view, _kind(before, after), identity, before, after))
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
