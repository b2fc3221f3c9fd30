"""The collector database's schema, as ordered sqlite-utils migrations.

Each migration runs once per database, inside a transaction with the record of it having
run, so an upgraded collector brings an old database forward on start. Fact tables follow
the catalogue (``collector.store.facts``) and are created with ``IF NOT EXISTS`` on every
start, so a catalogue that gained a table needs no migration of its own.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from collector.store.facts import create_fact_tables

__all__ = ["migrate"]

migrations = Migrations("posture")


@migrations()
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


def migrate(db: Database) -> None:
    """Bring ``db`` to the current schema (idempotent)."""
    migrations.apply(db)
    create_fact_tables(db.conn)
    db.conn.commit()
