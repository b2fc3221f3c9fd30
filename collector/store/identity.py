"""Storage of enrollment control, client certificates and approvals."""

from __future__ import annotations

__all__ = ["IDENTITY_SCHEMA"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
IDENTITY_SCHEMA: tuple[str, ...] = ()
