"""The ``osquery`` fact source: catalogue tables read from a running osqueryd.

osqueryd already knows how to read every table in Posture's catalogue, so when it runs on a
laptop the agent asks it instead of probing the system itself. Only the catalogue's columns
are requested and returned, so rows look the same whichever source produced them; columns
this osqueryd lacks (an older release) come back as "" instead of failing the whole table.

Example::

    source = OsquerySource("/var/osquery/osquery.em")
    if source.available() and "os_version" in source.tables():
        source.collect(TableRequest("os_version"))  # [{"name": "Ubuntu", ...}]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from agent.osquery_client import (
    OsqueryClient,
    OsqueryError,
    OsqueryUnavailable,
    default_socket_path,
)
from agent.sources import platform as this_platform
from agent.sources.base import ProbeError, Row, TableRequest
from protos.posture.v1.tables import (
    KEYED_TABLES,
    PATH_TABLES,
    TABLES,
    columns_for,
    is_volatile_sysctl,
    platform_tables,
)

__all__ = ["OsquerySource", "like_any_path", "quote_identifier", "quote_literal"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: osqueryd's table registry; ``active = 0`` marks tables of a disabled extension.
REGISTRY_SQL = "SELECT name FROM osquery_registry WHERE registry = 'table' AND active = 1"


def quote_literal(value: str) -> str:
    """A SQL string literal for ``value``, safe to splice into osquery SQL.

    osquery's Thrift ``query`` takes no bound parameters, so quoting is the only guard: SQLite
    string literals have one escape, a doubled single quote, and cannot hold a NUL.
    """
    if "\0" in value:
        raise ValueError(f"NUL byte in SQL literal {value!r}")
    return "'" + value.replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    """A quoted SQL identifier, so names like ``groups`` or ``match`` never read as keywords."""
    return '"' + name.replace('"', '""') + '"'


def like_any_path(patterns: Iterable[str], column: str = "path") -> str:
    """``path LIKE 'a' OR path LIKE 'b'``: osquery expands each pattern (``%`` wildcards)."""
    return " OR ".join(f"{quote_identifier(column)} LIKE {quote_literal(p)}" for p in patterns)


class OsquerySource:
    """Catalogue tables from osqueryd's extension socket (see ``agent.sources.base``).

    The connection is opened lazily and kept; when it breaks (osqueryd restarted or upgraded)
    the source reconnects once per call and forgets what it had learnt about the old daemon.
    """

    name = "osquery"

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        platform: str | None = None,
        connect_timeout: float = 1.0,
        query_timeout: float = 60.0,
    ) -> None:
        self.platform = platform or this_platform()
        self.socket_path = socket_path or default_socket_path(self.platform)
        self._timeouts = (connect_timeout, query_timeout)
        self._lock = threading.RLock()
        self._client: OsqueryClient | None = None
        self._registry: frozenset[str] | None = None
        self._columns: dict[str, frozenset[str]] = {}

    def available(self) -> bool:
        """Whether osqueryd answers on its socket (a ping over a fresh or cached connection)."""
        try:
            self._run(lambda client: client.ping())
        except (OsqueryUnavailable, OsqueryError) as exc:
            log.debug("osquery source unavailable: %s", exc)
            return False
        return True

    def tables(self) -> frozenset[str]:
        """Catalogue tables for this platform that osqueryd's registry has active.

        Posture's own tables (``file_lines``) are never claimed: osquery core lacks them, and
        an extension's table of the same name need not have the same columns or meaning.
        """
        catalogue = {
            table.name for table in platform_tables(self.platform) if not table.posture_extension
        }
        try:
            return frozenset(catalogue & self._registry_tables())
        except (OsqueryUnavailable, OsqueryError) as exc:
            log.warning("osquery source lists no tables: %s", exc)
            return frozenset()

    def collect(self, request: TableRequest) -> list[Row]:
        """Every row of ``request.name`` with exactly the catalogue's columns for this platform.

        Path tables (``file``, ``hash``) are read only for ``request.paths``; with no paths
        there is nothing to read, so the result is empty rather than a filesystem walk. A
        keyed table (``system_controls``) is read for the rows its paths name, or whole.
        """
        wanted = self._catalogue_columns(request.name)
        where = self._row_filter(request)
        if where == "":
            return []
        try:
            rows = self._run(lambda client: self._select(client, request.name, wanted, where))
        except OsqueryError as exc:
            raise ProbeError(f"osquery: {exc.message}") from exc
        except OsqueryUnavailable as exc:
            raise ProbeError(str(exc)) from exc
        if request.name == "system_controls":
            rows = [row for row in rows if not is_volatile_sysctl(row.get("name", ""))]
        return [{column: row.get(column, "") for column in wanted} for row in rows]

    def close(self) -> None:
        """Close the cached connection (the next call reconnects)."""
        with self._lock:
            self._forget()

    def _catalogue_columns(self, table: str) -> tuple[str, ...]:
        """The catalogue's columns for ``table``, or ProbeError if this source cannot claim it."""
        schema = TABLES.get(table)
        if schema is None or schema.posture_extension or self.platform not in schema.platforms:
            raise ProbeError(
                f"osquery: {table} is not an osquery table in Posture's catalogue "
                f"for {self.platform}"
            )
        return columns_for(table, self.platform)

    @staticmethod
    def _row_filter(request: TableRequest) -> str | None:
        """The WHERE condition for a path table ("" when no paths) or a keyed table naming
        rows; None to read every row."""
        if request.name in KEYED_TABLES and request.paths:
            column = KEYED_TABLES[request.name]
        elif request.name not in PATH_TABLES:
            return None
        else:
            # A plan's registry paths are key paths (osquery's ``key`` column), not values.
            column = "key" if request.name == "registry" else "path"
        try:
            return like_any_path(request.paths, column)
        except ValueError as exc:
            raise ProbeError(f"osquery: cannot ask for {request.name}: {exc}") from exc

    def _select(
        self, client: OsqueryClient, table: str, wanted: tuple[str, ...], where: str | None
    ) -> list[dict[str, str]]:
        """Ask osqueryd for the wanted columns it has (all of them on a current release)."""
        present = self._table_columns(client, table)
        columns = ", ".join(quote_identifier(column) for column in wanted if column in present)
        if not columns:
            raise ProbeError(f"osquery: {table} has none of the catalogue's columns")
        sql = f"SELECT {columns} FROM {quote_identifier(table)}"
        return client.query(sql if where is None else f"{sql} WHERE {where}")

    def _table_columns(self, client: OsqueryClient, table: str) -> frozenset[str]:
        """The columns this osqueryd's ``table`` has; getQueryColumns prepares, never runs."""
        if table not in self._columns:
            sql = f"SELECT * FROM {quote_identifier(table)}"
            self._columns[table] = frozenset(name for name, _ in client.query_columns(sql))
        return self._columns[table]

    def _registry_tables(self) -> frozenset[str]:
        """Active table names in osqueryd's registry, read once per connection."""
        with self._lock:
            if self._registry is None:
                rows = self._run(lambda client: client.query(REGISTRY_SQL))
                self._registry = frozenset(row.get("name", "") for row in rows)
            return self._registry

    def _run(self, action: Callable[[OsqueryClient], _T]) -> _T:
        """Run ``action`` on the cached connection, reconnecting once if it has broken."""
        with self._lock:
            had_connection = self._client is not None
            try:
                return action(self._connected())
            except OsqueryUnavailable as exc:
                if not had_connection:
                    raise
                log.info("osquery connection lost, reconnecting: %s", exc)
                self._forget()
                return action(self._connected())

    def _connected(self) -> OsqueryClient:
        """The cached connection, opened first if there is none."""
        if self._client is None:
            connect_timeout, query_timeout = self._timeouts
            client = OsqueryClient(
                self.socket_path, connect_timeout=connect_timeout, query_timeout=query_timeout
            )
            client.open()
            self._client = client
        return self._client

    def _forget(self) -> None:
        """Drop the connection and what it told us: a restarted osqueryd may differ."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._registry = None
        self._columns.clear()
