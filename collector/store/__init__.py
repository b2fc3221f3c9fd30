"""Storage: the only package that imports sqlite-utils.

``SqliteStore`` is the embedded default engine. The service depends on its small typed
methods, not on SQL, so a second engine (PostgreSQL) can stand behind the same methods.
"""

from collector.store.sqlite import HostExistsError, SqliteStore, Transition

__all__ = ["HostExistsError", "SqliteStore", "Transition"]
