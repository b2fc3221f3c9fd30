"""The agent's durable state: spooled batches, what was sent, and its enrollment.

One SQLite file, so that spooling a batch, advancing the sequence number and remembering
the digests it was diffed against happen in one transaction: a crash at any moment leaves
either the whole batch or none of it. A batch leaves the spool only when the collector
acknowledges its seq. ``synchronous=FULL`` because a laptop's battery can die at any time.

**Bounded.** A collector can be unreachable for days, so the spool is bounded by bytes and by
age (``SpoolLimits``). Past either bound the oldest batch is *folded* into the next one: its
tables that the next batch does not carry are added to it (they are still the newest state of
those tables), and the next batch carries a gap record saying which seqs were dropped and
when they were collected. The newest batch is never dropped, and the newest state of every
table always survives, so once the collector is back its copy equals the agent's last
collection. Payloads are zlib-compressed JSON (fact tables shrink about ten times), and the
byte bound counts those compressed bytes.

**Epochs.** Every spool file gets a random ``spool_id`` when it is created, sent on every
batch. A spool that is lost, reinstalled or found corrupt starts again at seq 1 with a new id,
which tells the collector that its seqs start again (``collector.store.delivery``).

**Corruption.** A spool that fails SQLite's ``quick_check`` (or is not a database at all) is
moved aside as ``<name>.corrupt-<timestamp>`` with a log line, and a fresh spool starts; the
enrollment and plan are copied over when they can still be read, so the agent keeps its
identity.

**Full disk.** When SQLite cannot write (no space, or the file-size limit), the spool drops
intermediate states to make room and tries once more; if that fails too the collection is
not spooled (``SpoolFullError``), and the next batch that is spooled carries a gap record
(seq 0: never spooled) counting the lost collections.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.collect import Collection, TableResult

__all__ = [
    "DEFAULT_MAX_AGE_HOURS",
    "DEFAULT_MAX_MB",
    "Enrollment",
    "Gap",
    "Spool",
    "SpoolFullError",
    "SpoolLimits",
    "SpooledBatch",
    "merge_gaps",
]

log = logging.getLogger("posture.agent")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    collected_at_ms INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_digests (table_name TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Defaults of ``SpoolLimits``. Measured on this project's test machine (75 processes) a
#: typical 5-minute delta is 11.5 KB compressed (116 KB of JSON: the processes table changes
#: every time) and a first full report 33 KB; a laptop with 400 processes sends about five
#: times that, ~60 KB. 72 hours at 5 minutes is 864 batches: ~10 MB here, ~52 MB on such a
#: laptop, so 128 MB holds 72 hours at more than twice the laptop's rate. Seven days of age
#: keeps a week-long outage's intermediate states when the bytes allow.
DEFAULT_MAX_MB = 128.0
DEFAULT_MAX_AGE_HOURS = 168.0
#: SQLite's messages for "cannot write more": no space left, or the file-size limit (EFBIG
#: surfaces as a write I/O error).
_NO_SPACE = ("database or disk is full", "disk i/o error")
_WAL_LIMIT = 4 * 1024 * 1024
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_CARRIED_OVER = frozenset({"last_seq", "spool_id"})


class SpoolFullError(Exception):
    """The disk (or the file-size limit) has no room for this collection, even after dropping
    every intermediate state; the collection is counted in the next batch's gap record."""


@dataclass(frozen=True)
class SpoolLimits:
    """How much the spool may hold before it folds its oldest batches into newer ones."""

    max_bytes: int = int(DEFAULT_MAX_MB * 1024 * 1024)
    max_age_seconds: float = DEFAULT_MAX_AGE_HOURS * 3600

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_age_seconds <= 0:
            raise ValueError("spool limits must be positive")


@dataclass(frozen=True)
class Enrollment:
    collector: str
    ca_cert: str
    host_id: str
    credential: str


@dataclass(frozen=True)
class Gap:
    """A run of batches the spool dropped (``first_seq`` 0: collections never spooled)."""

    first_seq: int
    last_seq: int
    batches: int
    first_collected_at_ms: int
    last_collected_at_ms: int


@dataclass(frozen=True)
class SpooledBatch:
    seq: int
    collected_at_ms: int
    changed: dict[str, TableResult]
    digests: dict[str, str]
    plan_version: str
    full: bool
    gaps: tuple[Gap, ...] = ()
    spool_id: str = ""


def merge_gaps(gaps: Sequence[Gap]) -> tuple[Gap, ...]:
    """Gaps in seq order with adjacent or overlapping runs joined; seq-0 gaps become one."""
    never = [gap for gap in gaps if gap.first_seq == 0]
    runs: list[Gap] = []
    for gap in sorted((g for g in gaps if g.first_seq), key=lambda g: g.first_seq):
        if runs and gap.first_seq <= runs[-1].last_seq + 1:
            runs[-1] = _join(runs[-1], gap)
        else:
            runs.append(gap)
    if never:
        joined = never[0]
        for gap in never[1:]:
            joined = _join(joined, gap)
        runs.insert(0, joined)
    return tuple(runs)


def _join(a: Gap, b: Gap) -> Gap:
    return Gap(
        first_seq=min(a.first_seq, b.first_seq),
        last_seq=max(a.last_seq, b.last_seq),
        batches=a.batches + b.batches,
        first_collected_at_ms=min(a.first_collected_at_ms, b.first_collected_at_ms),
        last_collected_at_ms=max(a.last_collected_at_ms, b.last_collected_at_ms),
    )


def _encode(payload: Mapping[str, object]) -> bytes:
    return zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 6)


def _decode(payload: str | bytes) -> dict[str, Any]:
    """Compressed payloads are BLOBs; spools written before compression hold JSON text."""
    text = zlib.decompress(payload) if isinstance(payload, bytes) else payload
    data: dict[str, Any] = json.loads(text)
    return data


def _no_space(error: sqlite3.Error) -> bool:
    return any(text in str(error).lower() for text in _NO_SPACE)


class Spool:
    def __init__(self, path: Path, limits: SpoolLimits | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.limits = limits or SpoolLimits()
        self.conn = _open_checked(path)
        path.chmod(0o600)  # holds the agent credential
        # The daemon calls in from worker threads; one connection, one caller at a time.
        self._lock = threading.RLock()
        #: Collections a full disk kept out of the spool, reported on the next batch.
        self._unspooled: Gap | None = None
        if self.get("spool_id") is None:
            self.put({"spool_id": secrets.token_hex(16)})
        self.spool_id = str(self.get("spool_id"))

    def close(self) -> None:
        """Close once the operation in progress (in a worker thread) is done: closing a
        connection under a running statement crashes SQLite."""
        with self._lock:
            self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # an I/O error may have rolled it back already
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _read(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.conn.execute(sql, parameters).fetchall()

    # Key-value state ----------------------------------------------------------------

    def get(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM state WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, values: Mapping[str, str]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", values.items()
            )

    def enrollment(self) -> Enrollment | None:
        values = [self.get(key) for key in ("collector", "ca_cert", "host_id", "credential")]
        if any(value is None for value in values):
            return None
        return Enrollment(*(str(value) for value in values))

    def save_enrollment(self, enrollment: Enrollment, plan_json: str) -> None:
        self.put(
            {
                "collector": enrollment.collector,
                "ca_cert": enrollment.ca_cert,
                "host_id": enrollment.host_id,
                "credential": enrollment.credential,
                "plan": plan_json,
            }
        )

    # Batches ------------------------------------------------------------------------

    def spool(
        self, collection: Collection, collected_at_ms: int, plan_version: str
    ) -> tuple[int, int]:
        """Spool a batch of the tables that changed since the last one; returns (seq, changed).

        A batch with no changed table is still spooled: its digests tell the collector the
        host is alive and its facts current, so the host never turns stale by being steady.

        Diffing against what was spooled (not what was acknowledged) is safe because the
        collector applies a host's batches in order, every batch carries all digests so the
        collector can ask for a full resend if its copy ever disagrees, and a dropped batch's
        tables are folded into the next one (see the module docstring).

        Raises ``SpoolFullError`` when there is no room even after dropping every
        intermediate state; nothing is spooled then and the next batch reports the gap.
        """
        try:
            return self._spool(collection, collected_at_ms, plan_version)
        except sqlite3.OperationalError as error:
            if not _no_space(error):
                raise
            log.warning("spool %s: no room (%s); dropping intermediate states", self.path, error)
        try:
            self.make_room()
            return self._spool(collection, collected_at_ms, plan_version)
        except sqlite3.OperationalError as error:
            if not _no_space(error):
                raise
            self._count_unspooled(collected_at_ms)
            raise SpoolFullError(
                f"no room to spool a collection in {self.path}: {error}"
            ) from error

    def _count_unspooled(self, collected_at_ms: int) -> None:
        gap = Gap(0, 0, 1, collected_at_ms, collected_at_ms)
        self._unspooled = merge_gaps([self._unspooled, gap])[0] if self._unspooled else gap

    def _spool(
        self, collection: Collection, collected_at_ms: int, plan_version: str
    ) -> tuple[int, int]:
        digests = collection.digests()
        with self._transaction() as conn:
            sent = dict(conn.execute("SELECT table_name, digest FROM sent_digests").fetchall())
            changed = {
                name: collection.tables[name]
                for name, digest in digests.items()
                if sent.get(name) != digest
            }
            gaps = [self._unspooled] if self._unspooled else []
            payload = {
                "changed": {
                    name: {"rows": result.rows, "error": result.error}
                    for name, result in changed.items()
                },
                "digests": digests,
                "plan_version": plan_version,
                "full": set(changed) == set(digests),
                "gaps": [asdict(gap) for gap in gaps],
            }
            row = conn.execute("SELECT value FROM state WHERE key = 'last_seq'").fetchone()
            seq = int(row[0]) + 1 if row else 1
            conn.execute(
                "INSERT INTO batches (seq, collected_at_ms, payload) VALUES (?, ?, ?)",
                (seq, collected_at_ms, _encode(payload)),
            )
            conn.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('last_seq', ?)", (str(seq),)
            )
            conn.execute("DELETE FROM sent_digests")
            conn.executemany("INSERT INTO sent_digests VALUES (?, ?)", digests.items())
            self._enforce_limits(conn, collected_at_ms)
        self._unspooled = None
        return seq, len(changed)

    def _enforce_limits(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Fold the oldest batches forward while the spool is over its age or byte bound."""
        oldest_allowed = now_ms - int(self.limits.max_age_seconds * 1000)
        while True:
            count, size, oldest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(collected_at_ms)"
                " FROM batches"
            ).fetchone()
            over = size > self.limits.max_bytes or oldest < oldest_allowed
            if count < 2 or not over:
                return
            self._fold_oldest(conn)

    def _fold_oldest(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest batch: the next one takes its tables it does not carry itself,
        its gap records, and a gap record for the dropped batch."""
        (old_seq, old_at, old_raw), (next_seq, _, next_raw) = conn.execute(
            "SELECT seq, collected_at_ms, payload FROM batches ORDER BY seq LIMIT 2"
        ).fetchall()
        old, new = _decode(old_raw), _decode(next_raw)
        new["changed"] = {**old["changed"], **new["changed"]}
        new["full"] = set(new["changed"]) == set(new["digests"])
        dropped = Gap(old_seq, old_seq, 1, old_at, old_at)
        gaps = [Gap(**g) for g in (*old.get("gaps", ()), *new.get("gaps", ()))]
        new["gaps"] = [asdict(gap) for gap in merge_gaps([*gaps, dropped])]
        conn.execute("DELETE FROM batches WHERE seq = ?", (old_seq,))
        conn.execute("UPDATE batches SET payload = ? WHERE seq = ?", (_encode(new), next_seq))

    def make_room(self) -> int:
        """Drop every intermediate state (fold all batches into the newest); returns how many
        batches were dropped. Called when the disk is full."""
        with self._lock:
            with suppress(sqlite3.Error):  # a smaller WAL leaves more room for the folding
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with self._transaction() as conn:
                count = int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
                for _ in range(count - 1):
                    self._fold_oldest(conn)
        return max(count - 1, 0)

    def forget_sent(self, tables: list[str] | None = None) -> None:
        """Make the next batch carry these tables whole (all tables when None)."""
        with self._transaction() as conn:
            if tables is None:
                conn.execute("DELETE FROM sent_digests")
            else:
                conn.executemany(
                    "DELETE FROM sent_digests WHERE table_name = ?", [(t,) for t in tables]
                )

    def pending(self, after_seq: int = 0, limit: int = 64) -> list[SpooledBatch]:
        rows = self._read(
            "SELECT seq, collected_at_ms, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [self._batch(seq, at, payload) for seq, at, payload in rows]

    def pending_count(self, after_seq: int = 0) -> int:
        """Batches still spooled (unacknowledged), or only those after ``after_seq``."""
        return int(self._read("SELECT COUNT(*) FROM batches WHERE seq > ?", (after_seq,))[0][0])

    def spooled_bytes(self) -> int:
        """Compressed payload bytes held: what ``SpoolLimits.max_bytes`` bounds."""
        rows = self._read("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches")
        return int(rows[0][0])

    def last_digests(self) -> dict[str, str]:
        """The digests of the last collection spooled: the agent's last collected state."""
        return dict(self._read("SELECT table_name, digest FROM sent_digests"))

    def acknowledge(self, seq: int) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))

    def _batch(self, seq: int, collected_at_ms: int, payload: str | bytes) -> SpooledBatch:
        data = _decode(payload)
        return SpooledBatch(
            seq=seq,
            collected_at_ms=collected_at_ms,
            changed={
                name: TableResult(rows=table["rows"], error=table["error"])
                for name, table in data["changed"].items()
            },
            digests=data["digests"],
            plan_version=data["plan_version"],
            full=data["full"],
            gaps=tuple(Gap(**gap) for gap in data.get("gaps", ())),
            spool_id=self.spool_id,
        )


# Opening, and moving a corrupt spool aside ----------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # The WAL shrinks back after a checkpoint, so a full disk's WAL does not stay full.
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_checked(path: Path) -> sqlite3.Connection:
    """Open the spool; a corrupt one is moved aside and a fresh one takes its place, keeping
    whatever enrollment state can still be read from the old one."""
    try:
        return _connect(path)
    except sqlite3.DatabaseError as error:
        if not _corrupt(error):
            raise  # locked, unwritable directory, full disk: not the file's fault
        kept = _salvage_state(path)
        aside = _move_aside(path)
        log.error(
            "spool %s is corrupt (%s): moved it aside to %s and started a fresh spool"
            " (%d state values kept; unacknowledged batches in it are not sent)",
            path,
            error,
            aside,
            len(kept),
        )
    conn = _connect(path)
    if kept:
        conn.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", kept.items())
    return conn


def _corrupt(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF in _CORRUPT_CODES) or str(error).startswith(
        "quick_check:"
    )


def _salvage_state(path: Path) -> dict[str, str]:
    """The enrollment and plan from a corrupt spool, when its state table still reads."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT key, value FROM state").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {str(k): str(v) for k, v in rows if k not in _CARRIED_OVER}


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{aside}{suffix}")
    return aside
