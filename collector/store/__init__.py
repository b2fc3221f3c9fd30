"""Storage: the only package that imports sqlite-utils or psycopg.

One storage contract, two engines: ``SqliteStore`` (the embedded default, one file) and
``PostgresStore`` (several collectors sharing one PostgreSQL), both built from the same
mixins, one per noun. ``open_store(location)`` picks the engine from a path or URL. The
service depends on the mixins' small typed methods, not on SQL.
"""

from collector.store.drift import EventFilter, Pending
from collector.store.engine import Location, StoreUnavailableError, open_store, parse_location
from collector.store.history import FactChange, HostActivity, IssuedReport, ResultAt
from collector.store.hosts import HostExistsError
from collector.store.leases import Lease
from collector.store.results import Transition
from collector.store.sqlite import SqliteStore

#: The storage contract's type: every engine's store is one (``PostgresStore`` included).
Store = SqliteStore

__all__ = [
    "EventFilter",
    "FactChange",
    "HostActivity",
    "HostExistsError",
    "IssuedReport",
    "Lease",
    "Location",
    "Pending",
    "ResultAt",
    "SqliteStore",
    "Store",
    "StoreUnavailableError",
    "Transition",
    "open_store",
    "parse_location",
]
