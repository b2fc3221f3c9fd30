"""Storage of the hash-chained audit log."""

from __future__ import annotations

__all__ = ["AUDIT_SCHEMA"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
AUDIT_SCHEMA: tuple[str, ...] = ()
