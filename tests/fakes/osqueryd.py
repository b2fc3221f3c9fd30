"""A fake osqueryd: the real osquery extension Thrift protocol on a real Unix socket.

CI has no osqueryd, yet the agent's osquery path should run there end to end: the real
client, the real Thrift framing and the real generated ``ExtensionManager`` classes. This
fake serves osquery-python's own ``ExtensionManager.Processor`` over thrift's ``TServer``
machinery, and answers ``query`` by running the SQL in an in-memory SQLite database that
holds the canned tables, so a test's SQL really runs (and really fails, with SQLite's own
message and status code 1, as osqueryd reports ``sqlite3_errmsg``).

Usage::

    with serve_fake_osqueryd(path, {"os_version": [{"name": "Ubuntu", "version": "24.04"}]}):
        ...  # connect an OsqueryClient or OsquerySource to ``path``

Every column is TEXT, because osquery sends every value as a string; a table's columns are
the keys of its rows (rows missing a key read NULL, sent as "" like osqueryd's default
``--nullvalue``). An empty table takes its columns from Posture's catalogue. The fake adds
``osquery_registry`` (every canned table, active) and ``osquery_info`` unless given.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from osquery.extensions import ExtensionManager
from osquery.extensions.ttypes import ExtensionCode, ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.transport import TSocket, TTransport

from protos.posture.v1.tables import TABLES

__all__ = ["FakeOsqueryd", "serve_fake_osqueryd"]

Tables = Mapping[str, Sequence[Mapping[str, str]]]

#: A few non-table registry entries, so a query must filter on ``registry = 'table'``.
_OTHER_PLUGINS = (("config", "filesystem"), ("logger", "filesystem"), ("distributed", "tls"))
FAKE_VERSION = "5.23.0-posture-fake"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(table: str, rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Row keys in first-seen order; the catalogue's columns for an empty table."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if columns:
        return columns
    if table not in TABLES:
        raise ValueError(f"fake osqueryd: give {table} a row or use a catalogue table")
    return list(TABLES[table].column_names())


def _with_builtin_tables(tables: Tables) -> dict[str, Sequence[Mapping[str, str]]]:
    """The canned tables plus osqueryd's own ``osquery_info`` and ``osquery_registry``."""
    result: dict[str, Sequence[Mapping[str, str]]] = dict(tables)
    result.setdefault("osquery_info", [{"version": FAKE_VERSION, "extensions": "active"}])
    names = [*result, "osquery_registry"]
    registry = [{"registry": "table", "name": name, "active": "1"} for name in names]
    registry += [{"registry": kind, "name": name, "active": "1"} for kind, name in _OTHER_PLUGINS]
    result.setdefault("osquery_registry", registry)
    return result


def _as_text(value: Any) -> str:
    """osquery's rendering of a SQLite value: NULL as "", everything else as text."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _failure(message: str) -> ExtensionResponse:
    status = ExtensionStatus(code=ExtensionCode.EXT_FAILED, message=message, uuid=0)
    return ExtensionResponse(status=status, response=[])


def _success(rows: list[dict[str, str]]) -> ExtensionResponse:
    status = ExtensionStatus(code=ExtensionCode.EXT_SUCCESS, message="OK", uuid=0)
    return ExtensionResponse(status=status, response=rows)


class FakeOsqueryd:
    """The ``ExtensionManager`` handler: canned tables in SQLite, answered like osqueryd.

    Method names are the Thrift service's. ``queries`` records every SQL text received.
    """

    def __init__(self, tables: Tables) -> None:
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        for name, rows in _with_builtin_tables(tables).items():
            self._load(name, rows)
        # osquery's tables are read-only virtual tables; so are these.
        self._db.execute("PRAGMA query_only = ON")

    def _load(self, table: str, rows: Sequence[Mapping[str, str]]) -> None:
        columns = _columns(table, rows)
        names = ", ".join(f"{_quote(column)} TEXT" for column in columns)
        self._db.execute(f"CREATE TABLE {_quote(table)} ({names})")
        marks = ", ".join("?" for _ in columns)
        values = [tuple(row.get(column) for column in columns) for row in rows]
        self._db.executemany(f"INSERT INTO {_quote(table)} VALUES ({marks})", values)

    def _execute(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            self.queries.append(sql)
            cursor = self._db.execute(sql)
            try:
                names = [column[0] for column in cursor.description or ()]
                return names, cursor.fetchall()
            finally:
                cursor.close()

    def query(self, sql: str) -> ExtensionResponse:
        try:
            names, rows = self._execute(sql)
        except sqlite3.Error as exc:
            return _failure(str(exc))
        return _success([dict(zip(names, map(_as_text, row), strict=True)) for row in rows])

    def getQueryColumns(self, sql: str) -> ExtensionResponse:
        try:
            names, _ = self._execute(sql)
        except sqlite3.Error as exc:
            return _failure(str(exc))
        return _success([{name: "TEXT"} for name in names])

    def ping(self) -> ExtensionStatus:
        return ExtensionStatus(code=ExtensionCode.EXT_SUCCESS, message="OK", uuid=0)

    def extensions(self) -> dict[int, Any]:
        return {}

    def options(self) -> dict[str, Any]:
        return {}

    def registerExtension(self, info: Any, registry: Any) -> ExtensionStatus:
        return ExtensionStatus(code=ExtensionCode.EXT_FAILED, message="fake: no extensions")

    def deregisterExtension(self, uuid: int) -> ExtensionStatus:
        return ExtensionStatus(code=ExtensionCode.EXT_FAILED, message="No extension UUID")

    def call(self, registry: str, item: str, request: Any) -> ExtensionResponse:
        return _failure(f"fake osqueryd has no {registry} plugin {item}")

    def shutdown(self) -> None:
        return None

    def close(self) -> None:
        self._db.close()


class _UnixServerSocket(TSocket.TServerSocket):  # type: ignore[misc]
    """thrift's server socket, minus the stale-socket probe its ``listen`` never closes
    (a ResourceWarning, which the test suite turns into an error)."""

    def listen(self) -> None:
        self.handle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.handle.bind(self._unix_socket)
        self.handle.listen(self._backlog)


class _StoppableServer(TServer.TServer):  # type: ignore[misc]
    """A thread per connection, like osqueryd, and a ``stop()`` thrift's servers lack."""

    def __init__(self, handler: FakeOsqueryd, path: str) -> None:
        super().__init__(
            ExtensionManager.Processor(handler),
            _UnixServerSocket(unix_socket=path),
            TTransport.TBufferedTransportFactory(),
            TBinaryProtocol.TBinaryProtocolFactory(),
        )
        self.path = path
        self._stopping = threading.Event()
        self._clients: list[Any] = []
        self._threads: list[threading.Thread] = []

    def serve(self) -> None:
        while True:
            client = self.serverTransport.accept()
            if self._stopping.is_set():
                client.close()
                return
            thread = threading.Thread(target=self._handle, args=(client,), daemon=True)
            self._clients.append(client)
            self._threads.append(thread)
            thread.start()

    def _handle(self, client: Any) -> None:
        itrans = self.inputTransportFactory.getTransport(client)
        otrans = self.outputTransportFactory.getTransport(client)
        iprot = self.inputProtocolFactory.getProtocol(itrans)
        oprot = self.outputProtocolFactory.getProtocol(otrans)
        try:
            while True:
                self.processor.process(iprot, oprot)
        except (TTransport.TTransportException, OSError):
            pass
        finally:
            itrans.close()
            otrans.close()

    def stop(self, accept_thread: threading.Thread) -> None:
        """Wake ``accept()`` with one last connection, then hang up on every client."""
        self._stopping.set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
            wake.connect(self.path)
        accept_thread.join()
        self.serverTransport.close()
        for client in self._clients:
            handle = client.handle  # None once its thread has closed it
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        os.unlink(self.path)


@contextlib.contextmanager
def serve_fake_osqueryd(socket_path: str, tables: Tables) -> Iterator[FakeOsqueryd]:
    """Serve ``tables`` at ``socket_path`` until the block ends, then remove the socket.

    Keep ``socket_path`` short: Unix socket paths are limited to about 104 bytes.
    """
    handler = FakeOsqueryd(tables)
    server = _StoppableServer(handler, socket_path)
    server.serverTransport.listen()
    thread = threading.Thread(target=server.serve, name="fake-osqueryd", daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        server.stop(thread)
        handler.close()
