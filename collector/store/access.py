"""Storage of API tokens, people and sessions."""

from __future__ import annotations

__all__ = ["ACCESS_SCHEMA"]

#: Portable DDL (SQLite and PostgreSQL), applied once by its migration in schema.
ACCESS_SCHEMA: tuple[str, ...] = ()
