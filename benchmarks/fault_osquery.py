"""A churning osqueryd for the fault harness: the real osquery extension Thrift protocol on a
real Unix socket, answering every catalogue table with rows that change over time.

The fault harness runs real ``posture-agent`` processes; they read their facts through the
agent's real osquery source from one of these, so that many agents on one machine each have
their own identity (``system_info.uuid``) and every collection differs from the last (the
rows follow a clock ticking every ``tick_seconds``). No SQL is run: the handler reads the
table name from osquery's ``SELECT ... FROM "table"`` and answers with the catalogue's
columns, as a current osqueryd would. Path tables are answered empty.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from osquery.extensions import ExtensionManager
from osquery.extensions.ttypes import ExtensionCode, ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.transport import TSocket, TTransport

from protos.posture.v1.tables import PATH_TABLES, TABLES, platform_tables

__all__ = ["ChurningOsqueryd", "serve_churning_osqueryd"]

_FROM = re.compile(r'\bFROM\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', re.IGNORECASE)
Rows = list[dict[str, str]]


def _ok(rows: Rows) -> ExtensionResponse:
    status = ExtensionStatus(code=ExtensionCode.EXT_SUCCESS, message="OK", uuid=0)
    return ExtensionResponse(status=status, response=rows)


def _failed(message: str) -> ExtensionResponse:
    status = ExtensionStatus(code=ExtensionCode.EXT_FAILED, message=message, uuid=0)
    return ExtensionResponse(status=status, response=[])


class ChurningOsqueryd:
    """The ``ExtensionManager`` handler: one machine's catalogue tables, changing per tick."""

    def __init__(self, machine: str, tick_seconds: float = 0.05) -> None:
        self.machine = machine
        self.tick_seconds = tick_seconds
        self.tables = [t.name for t in platform_tables("linux") if not t.posture_extension]

    def _tick(self) -> int:
        return int(time.monotonic() / self.tick_seconds)

    def rows(self, table: str) -> Rows:
        """``table``'s rows now: every catalogue column, a few of them moving with the tick."""
        tick = self._tick()
        values: list[dict[str, str]] = []
        if table == "system_info":
            values = [{"uuid": self.machine, "hostname": self.machine, "hardware_serial": "F1"}]
        elif table == "os_version":
            values = [{"name": "Debian GNU/Linux", "version": "12", "major": "12", "platform":
                       "debian"}]  # fmt: skip
        elif table == "users":
            values = [{"uid": "0", "username": "root", "shell": "/bin/bash"}]
            values += [{"uid": str(1000 + tick % 7), "username": f"u{tick % 7}"}]
        elif table == "processes":
            values = [{"pid": str(tick), "name": "worker"}, {"pid": "1", "name": "init"}]
        elif table == "listening_ports":
            values = [{"pid": "1", "port": str(2000 + tick % 3), "address": "127.0.0.1"}]
        elif table == "system_controls":
            values = [{"name": "kernel.random.uuid", "current_value": f"{self.machine}-{tick}"}]
        columns = TABLES[table].column_names()
        return [{column: row.get(column, "") for column in columns} for row in values]

    def query(self, sql: str) -> ExtensionResponse:
        if "osquery_registry" in sql:
            return _ok([{"name": name} for name in (*self.tables, "osquery_registry")])
        match = _FROM.search(sql)
        if match is None or match.group(1) not in self.tables:
            return _failed(f"no such table in: {sql[:80]}")
        table = match.group(1)
        if table in PATH_TABLES:
            return _ok([])
        return _ok(self.rows(table))

    def getQueryColumns(self, sql: str) -> ExtensionResponse:
        match = _FROM.search(sql)
        if match is None or match.group(1) not in self.tables:
            return _failed(f"no such table in: {sql[:80]}")
        return _ok([{name: "TEXT"} for name in TABLES[match.group(1)].column_names()])

    def ping(self) -> ExtensionStatus:
        return ExtensionStatus(code=ExtensionCode.EXT_SUCCESS, message="OK", uuid=0)

    def extensions(self) -> dict[int, Any]:
        return {}

    def options(self) -> dict[str, Any]:
        return {}

    def registerExtension(self, info: Any, registry: Any) -> ExtensionStatus:
        return ExtensionStatus(code=ExtensionCode.EXT_FAILED, message="no extensions")

    def deregisterExtension(self, uuid: int) -> ExtensionStatus:
        return ExtensionStatus(code=ExtensionCode.EXT_FAILED, message="No extension UUID")

    def call(self, registry: str, item: str, request: Any) -> ExtensionResponse:
        return _failed(f"no {registry} plugin {item}")

    def shutdown(self) -> None:
        return None


class _Server(TServer.TServer):  # type: ignore[misc]
    """A thread per connection, like osqueryd; ``stop`` wakes ``accept`` and hangs up."""

    def __init__(self, handler: ChurningOsqueryd, path: str) -> None:
        server_socket = TSocket.TServerSocket(unix_socket=path)
        super().__init__(
            ExtensionManager.Processor(handler),
            server_socket,
            TTransport.TBufferedTransportFactory(),
            TBinaryProtocol.TBinaryProtocolFactory(),
        )
        self.path = path
        self._stopping = threading.Event()
        self._clients: list[Any] = []

    def listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        self.serverTransport.handle = listener

    def serve(self) -> None:
        while not self._stopping.is_set():
            client = self.serverTransport.accept()
            if self._stopping.is_set():
                client.close()
                return
            self._clients.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: Any) -> None:
        itrans = self.inputTransportFactory.getTransport(client)
        otrans = self.outputTransportFactory.getTransport(client)
        iprot = self.inputProtocolFactory.getProtocol(itrans)
        oprot = self.outputProtocolFactory.getProtocol(otrans)
        try:
            while True:
                self.processor.process(iprot, oprot)
        except (TTransport.TTransportException, OSError, EOFError):
            pass
        finally:
            itrans.close()

    def stop(self, thread: threading.Thread) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.connect(self.path)
        thread.join(timeout=5)
        self.serverTransport.close()
        for client in self._clients:
            with contextlib.suppress(OSError, AttributeError):
                client.handle.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.contextmanager
def serve_churning_osqueryd(path: str, machine: str) -> Iterator[ChurningOsqueryd]:
    """Serve one machine's churning tables at ``path`` (keep it short: ~100 bytes max)."""
    handler = ChurningOsqueryd(machine)
    server = _Server(handler, path)
    server.listen()
    thread = threading.Thread(target=server.serve, name=f"osqueryd-{machine}", daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        server.stop(thread)
