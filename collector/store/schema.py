"""The collector database's schema, as ordered migrations: one definition, both engines.

Each migration runs once per database, inside a transaction with the record of it having
run, so an upgraded collector brings an old database forward on start. On SQLite they are
sqlite-utils migrations (recorded in ``_sqlite_migrations``); on PostgreSQL the same
functions run through ``collector.store.postgres.PgDatabase``, which translates their DDL
(``collector.store.dialect``), and are recorded in ``posture_migrations``. ``MIGRATIONS``
is the order both follow. New DDL must be portable (see the per-area ``*_SCHEMA`` tuples).
Fact tables follow the catalogue (``collector.store.facts``) and are created with ``IF NOT
EXISTS`` on every start, so a catalogue that gained a table needs no migration of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlite_utils import Database, Migrations

from collector.store.access import ACCESS_SCHEMA
from collector.store.audit import AUDIT_SCHEMA
from collector.store.delivery import DELIVERY_SCHEMA
from collector.store.facts import create_fact_tables
from collector.store.identity import IDENTITY_SCHEMA
from collector.store.leases import LEASES_SCHEMA

__all__ = ["MIGRATIONS", "migrate"]

Migration = Callable[[Database], None]

migrations = Migrations("posture")
#: (name, step) in the order they run, on either engine.
MIGRATIONS: list[tuple[str, Migration]] = []


def _migration(step: Migration) -> Migration:
    """Register ``step`` for both engines under its function name."""
    MIGRATIONS.append((step.__name__, step))
    return migrations()(step)


@_migration
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE enroll_secrets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT,
            uses INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE hosts (
            id INTEGER PRIMARY KEY,
            hardware_uuid TEXT NOT NULL,
            hardware_serial TEXT NOT NULL,
            hostname TEXT NOT NULL,
            platform TEXT NOT NULL,
            os_version TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            credential_hash TEXT NOT NULL UNIQUE,
            credential_revoked_at TEXT,
            enroll_secret_id INTEGER REFERENCES enroll_secrets(id),
            enrolled_at TEXT NOT NULL,
            last_seen_at TEXT,
            last_collected_at TEXT,
            interval_seconds INTEGER NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX hosts_identity ON hosts (hardware_uuid, hardware_serial);
        CREATE TABLE host_tables (
            host_id INTEGER NOT NULL REFERENCES hosts(id),
            table_name TEXT NOT NULL,
            digest TEXT NOT NULL,
            error TEXT NOT NULL,
            collected_at TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (host_id, table_name)
        ) WITHOUT ROWID;
        CREATE TABLE batches (
            host_id INTEGER NOT NULL REFERENCES hosts(id),
            seq INTEGER NOT NULL,
            collected_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            tables_changed INTEGER NOT NULL,
            PRIMARY KEY (host_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE fact_changes (
            id INTEGER PRIMARY KEY,
            host_id INTEGER NOT NULL REFERENCES hosts(id),
            table_name TEXT NOT NULL,
            seq INTEGER NOT NULL,
            collected_at TEXT NOT NULL,
            change TEXT NOT NULL CHECK (change IN ('added', 'removed')),
            row_json TEXT NOT NULL
        );
        CREATE INDEX fact_changes_host ON fact_changes (host_id, table_name, collected_at);
        CREATE TABLE results (
            host_id INTEGER NOT NULL REFERENCES hosts(id),
            check_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            evidence_json TEXT NOT NULL,
            evaluated_at TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            PRIMARY KEY (host_id, check_id)
        ) WITHOUT ROWID;
        CREATE TABLE result_transitions (
            id INTEGER PRIMARY KEY,
            host_id INTEGER NOT NULL REFERENCES hosts(id),
            check_id TEXT NOT NULL,
            old_status TEXT,
            new_status TEXT NOT NULL,
            at TEXT NOT NULL,
            reason TEXT NOT NULL,
            evidence_sha256 TEXT NOT NULL
        );
        CREATE INDEX result_transitions_host ON result_transitions (host_id, at);
        CREATE TABLE policy_packs (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            first_loaded_at TEXT NOT NULL,
            PRIMARY KEY (name, sha256)
        ) WITHOUT ROWID;
        """
    )


#: m002: history (every result change with its evidence, row-level fact changes,
#: evaluations), drift (baselines, events, the webhook outbox), groups, waivers, issued
#: reports, and settings (the history floor, the report seal). Statements run one by one,
#: not as a script, so the migration stays inside its transaction.
_M002 = (
    "ALTER TABLE enroll_secrets ADD COLUMN group_name TEXT",
    "ALTER TABLE result_transitions ADD COLUMN status_since TEXT",
    "CREATE INDEX result_transitions_pair ON result_transitions (host_id, check_id, at, id)",
    "CREATE INDEX result_transitions_at ON result_transitions (at)",
    "CREATE TABLE evidence (sha256 TEXT PRIMARY KEY, rows_json TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE evaluations (
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        at TEXT NOT NULL,
        PRIMARY KEY (host_id, at)
    ) WITHOUT ROWID""",
    "CREATE INDEX batches_received ON batches (host_id, received_at)",
    """CREATE TABLE batch_floors (
        host_id INTEGER PRIMARY KEY REFERENCES hosts(id),
        seq INTEGER NOT NULL
    )""",
    """CREATE TABLE fact_history (
        id INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        view TEXT NOT NULL,
        seq INTEGER NOT NULL,
        collected_at TEXT NOT NULL,
        at TEXT NOT NULL,
        change TEXT NOT NULL CHECK (change IN ('added', 'removed', 'modified', 'snapshot')),
        identity_json TEXT NOT NULL,
        old_json TEXT,
        new_json TEXT
    )""",
    "CREATE INDEX fact_history_host ON fact_history (host_id, view, at)",
    "CREATE INDEX fact_history_at ON fact_history (at)",
    """CREATE TABLE baselines (
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        view TEXT NOT NULL,
        set_at TEXT NOT NULL,
        set_by TEXT,
        PRIMARY KEY (host_id, view)
    ) WITHOUT ROWID""",
    """CREATE TABLE baseline_rows (
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        view TEXT NOT NULL,
        identity_json TEXT NOT NULL,
        value_json TEXT NOT NULL,
        PRIMARY KEY (host_id, view, identity_json)
    ) WITHOUT ROWID""",
    """CREATE TABLE baseline_approvals (
        id INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        at TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        views INTEGER NOT NULL
    )""",
    """CREATE TABLE drift_events (
        id INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        at TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('compliance', 'config')),
        type TEXT NOT NULL,
        check_id TEXT NOT NULL,
        view TEXT NOT NULL,
        identity_json TEXT NOT NULL,
        old_json TEXT NOT NULL,
        new_json TEXT NOT NULL,
        changed_fields_json TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX drift_events_at ON drift_events (at)",
    "CREATE INDEX drift_events_host ON drift_events (host_id, at)",
    """CREATE TABLE outbox (
        event_id INTEGER PRIMARY KEY REFERENCES drift_events(id) ON DELETE CASCADE,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        delivered_at TEXT,
        last_error TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL",
    """CREATE TABLE group_rules (
        id INTEGER PRIMARY KEY,
        group_name TEXT NOT NULL,
        hostname_glob TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        deleted_at TEXT,
        deleted_by TEXT
    )""",
    """CREATE TABLE waivers (
        id INTEGER PRIMARY KEY,
        check_id TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('host', 'group', 'fleet')),
        host_id INTEGER REFERENCES hosts(id),
        group_name TEXT,
        justification TEXT NOT NULL,
        ticket TEXT NOT NULL,
        compensating_control TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        approved_by TEXT,
        approved_at TEXT,
        revoked_by TEXT,
        revoked_at TEXT,
        revoke_reason TEXT NOT NULL DEFAULT '',
        CHECK ((scope = 'host') = (host_id IS NOT NULL)),
        CHECK ((scope = 'group') = (group_name IS NOT NULL)),
        CHECK (approved_by IS NULL OR approved_by != requested_by)
    )""",
    """CREATE TABLE issued_reports (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        format TEXT NOT NULL,
        generated_at TEXT NOT NULL,
        as_of TEXT NOT NULL,
        scope_json TEXT NOT NULL,
        generated_by TEXT NOT NULL
    )""",
    "CREATE INDEX issued_reports_sha ON issued_reports (sha256)",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)


@_migration
def m002_history_drift_groups_waivers(db: Database) -> None:
    for statement in _M002:
        db.execute(statement)
    # Evidence was kept only with the latest result; keep it content-addressed from now on,
    # under the digest its transitions already recorded.
    rows = db.execute("SELECT DISTINCT evidence_json FROM results").fetchall()
    db.conn.executemany(
        "INSERT OR IGNORE INTO evidence (sha256, rows_json) VALUES (?, ?)",
        [(hashlib.sha256(text.encode()).hexdigest(), text) for (text,) in rows],
    )


def _run(db: Database, statements: tuple[str, ...]) -> None:
    for statement in statements:
        db.execute(statement)


@_migration
def m003_audit_log(db: Database) -> None:
    _run(db, AUDIT_SCHEMA)


@_migration
def m004_identity(db: Database) -> None:
    _run(db, IDENTITY_SCHEMA)


@_migration
def m005_delivery(db: Database) -> None:
    _run(db, DELIVERY_SCHEMA)


@_migration
def m006_access(db: Database) -> None:
    _run(db, ACCESS_SCHEMA)


@_migration
def m007_leases(db: Database) -> None:
    _run(db, LEASES_SCHEMA)


@_migration
def m008_stored_columns(db: Database) -> None:
    """The columns a host's stored rows of a table may fill (``apply_host_rows``' ``held``),
    as ``"<seq>:<columns>"`` (``collector.store.ingest._held_tables``); NULL, as every row
    starts, means not known yet."""
    db.execute("ALTER TABLE host_tables ADD COLUMN stored_columns TEXT")


def migrate(db: Database) -> None:
    """Bring the SQLite database ``db`` to the current schema (idempotent)."""
    migrations.apply(db)
    create_fact_tables(db.conn)
    db.conn.commit()
