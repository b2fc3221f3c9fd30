"""Storage: the only package that imports sqlite-utils.

``SqliteStore`` is the embedded default engine. The service depends on its small typed
methods, not on SQL, so a second engine (PostgreSQL) can stand behind the same methods.
"""

from collector.store.drift import EventFilter, Pending
from collector.store.history import FactChange, HostActivity, IssuedReport, ResultAt
from collector.store.hosts import HostExistsError
from collector.store.results import Transition
from collector.store.sqlite import SqliteStore

__all__ = [
    "EventFilter",
    "FactChange",
    "HostActivity",
    "HostExistsError",
    "IssuedReport",
    "Pending",
    "ResultAt",
    "SqliteStore",
    "Transition",
]
