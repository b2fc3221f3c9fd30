"""A typed client for a running osqueryd's extension socket: the only module importing osquery.

osquery-python's ``ExtensionClient`` is a thin wrapper over three Thrift objects (a socket,
a buffered transport and a binary protocol) plus the generated ``ExtensionManager.Client``.
This adapter builds those same objects itself rather than calling ``ExtensionClient``,
because the wrapper hides what the agent needs most:

- ``ExtensionClient.open()`` swallows the connection error and returns ``False`` after
  sleeping through its retry loop, so nobody can tell a missing socket from a root-only one;
  here ``open()`` fails at once with :class:`OsqueryUnavailable` naming the path and cause.
- ``ExtensionClient`` sets no socket timeout, so a wedged osqueryd would hang the agent
  forever; here connecting and querying each have a deadline.
- A failed query comes back as a status inside the response; here it raises
  :class:`OsqueryError` with osquery's code and message, so it cannot pass for "no rows".

Example::

    with OsqueryClient("/var/osquery/osquery.em") as osquery:
        osquery.query("SELECT version FROM osquery_info")  # [{"version": "5.23.0"}]
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:
    from thrift.Thrift import TException

__all__ = [
    "DEFAULT_SOCKET_PATHS",
    "OsqueryClient",
    "OsqueryError",
    "OsqueryUnavailable",
    "default_socket_path",
]

#: Where osqueryd listens for extensions by default (its ``--extensions_socket`` flag).
DEFAULT_SOCKET_PATHS: dict[str, str] = {
    "linux": "/var/osquery/osquery.em",
    "darwin": "/var/osquery/osquery.em",
    "windows": r"\\.\pipe\osquery.em",
}

_T = TypeVar("_T")


def _quiet_thrift_logging() -> None:
    """Keep thrift's own log lines out of the agent's log unless an operator asks for them.

    thrift logs every failed connect at ERROR, with a traceback at INFO, although this module
    turns the same failure into an exception that says more. An operator troubleshooting the
    socket can still set the ``thrift`` logger's level; an explicit level is left alone.
    """
    thrift_logger = logging.getLogger("thrift")
    if thrift_logger.level == logging.NOTSET:
        thrift_logger.setLevel(logging.CRITICAL)


_quiet_thrift_logging()


def default_socket_path(platform: str | None = None) -> str:
    """osqueryd's default extension socket for ``platform`` (this machine when None)."""
    if platform is None:
        platform = "windows" if sys.platform == "win32" else sys.platform
    return DEFAULT_SOCKET_PATHS.get(platform, DEFAULT_SOCKET_PATHS["linux"])


class OsqueryUnavailable(Exception):
    """osqueryd cannot be reached at ``path``; ``reason`` says why (missing, refused...)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"osquery socket {path} not reachable: {reason}")
        self.path = path
        self.reason = reason


class OsqueryError(Exception):
    """osqueryd answered, but with a failure status (e.g. a SQL error) for ``sql``."""

    def __init__(self, code: int, message: str, sql: str) -> None:
        super().__init__(f"osquery error {code}: {message}")
        self.code = code
        self.message = message
        self.sql = sql


def _describe_os_error(error: BaseException | None, timeout: float) -> str:
    """Turn a connect failure into words an operator can act on."""
    if isinstance(error, FileNotFoundError):
        return "socket missing (is osqueryd running with extensions enabled?)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (stale socket: nothing is listening on it)"
    if isinstance(error, PermissionError):
        return "permission denied (osqueryd's socket is usually root-only)"
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error) if error is not None else "unknown error"


def _describe_transport_error(error: TException, timeout: float) -> str:
    """Say why an open connection stopped working (EOF, deadline, reset...)."""
    from thrift.transport import TTransport

    if isinstance(error, TTransport.TTransportException):
        if error.type == TTransport.TTransportException.TIMED_OUT:
            return f"no answer within {timeout:g}s"
        if error.type == TTransport.TTransportException.END_OF_FILE:
            return "osqueryd closed the connection"
        inner = getattr(error, "inner", None)
        if isinstance(inner, OSError):
            return _describe_os_error(inner, timeout)
    return str(error) or type(error).__name__


def _new_socket(path: str, connect_timeout: float) -> Any:
    """The raw Thrift transport ``ExtensionClient`` would use: a named pipe on Windows."""
    if sys.platform == "win32":
        from osquery.TPipe import TPipe

        return TPipe(pipe_name=path, timeout=int(connect_timeout * 1000))
    from thrift.transport import TSocket

    sock = TSocket.TSocket(unix_socket=path)
    sock.setTimeout(connect_timeout * 1000)
    return sock


def _checked_rows(response: Any, sql: str) -> list[dict[str, str]]:
    """Rows of an ``ExtensionResponse``, or OsqueryError when its status is a failure."""
    from osquery.extensions.ttypes import ExtensionCode

    status = response.status
    if status is None:
        raise OsqueryError(ExtensionCode.EXT_FATAL, "response without a status", sql)
    if status.code != ExtensionCode.EXT_SUCCESS:
        raise OsqueryError(status.code, status.message or "unknown error", sql)
    return [dict(row) for row in response.response or ()]


class OsqueryClient:
    """One connection to osqueryd's extension socket; safe to share between threads.

    ``connect_timeout`` bounds ``open()``; ``query_timeout`` bounds each call once open, and
    is generous because tables like ``hash`` read files. After any transport failure the
    connection is closed and :class:`OsqueryUnavailable` raised; ``open()`` it again to retry.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        connect_timeout: float = 1.0,
        query_timeout: float = 60.0,
    ) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self._lock = threading.Lock()
        self._socket: Any = None
        self._transport: Any = None
        self._manager: Any = None

    @property
    def is_open(self) -> bool:
        return self._manager is not None

    def open(self) -> None:
        """Connect, or raise OsqueryUnavailable saying whether the socket is missing, refused
        or forbidden. Opening an open client is a no-op.

        osquery's Thrift bindings are imported here, not with this module: on the many hosts
        without osqueryd, a missing socket is reported before paying ~20 ms to import them.
        """
        with self._lock:
            if self._manager is not None:
                return
            if sys.platform != "win32" and not os.path.exists(self.socket_path):
                reason = _describe_os_error(FileNotFoundError(), self.connect_timeout)
                raise OsqueryUnavailable(self.socket_path, reason)
            from osquery.extensions.ExtensionManager import Client as ExtensionManagerClient
            from thrift.protocol import TBinaryProtocol
            from thrift.transport import TSocket, TTransport

            sock = _new_socket(self.socket_path, self.connect_timeout)
            transport = TTransport.TBufferedTransport(sock)
            try:
                transport.open()
            except TTransport.TTransportException as exc:
                reason = _describe_os_error(
                    getattr(exc, "inner", None) or exc, self.connect_timeout
                )
                raise OsqueryUnavailable(self.socket_path, reason) from exc
            if isinstance(sock, TSocket.TSocket):
                sock.setTimeout(self.query_timeout * 1000)
            self._socket, self._transport = sock, transport
            self._manager = ExtensionManagerClient(TBinaryProtocol.TBinaryProtocol(transport))

    def close(self) -> None:
        """Close the connection; closing a closed client is a no-op."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._socket = self._transport = self._manager = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Check that osqueryd still answers on this connection."""
        from osquery.extensions.ttypes import ExtensionCode

        status = self._call(lambda manager: manager.ping(), "ping")
        if status.code != ExtensionCode.EXT_SUCCESS:
            raise OsqueryError(status.code, status.message or "ping failed", "ping")

    def query(self, sql: str) -> list[dict[str, str]]:
        """Run ``sql`` in osqueryd; every value is a string, as osquery returns them.

        osquery's Thrift ``query`` takes no bound parameters, so callers must quote any
        literal they splice into ``sql`` themselves.
        """
        return _checked_rows(self._call(lambda manager: manager.query(sql), sql), sql)

    def query_columns(self, sql: str) -> list[tuple[str, str]]:
        """``(name, osquery type)`` of each column ``sql`` would return, without running it."""
        response = self._call(lambda manager: manager.getQueryColumns(sql), sql)
        return [next(iter(column.items())) for column in _checked_rows(response, sql) if column]

    def _call(self, request: Callable[[Any], _T], sql: str) -> _T:
        """Send one request, mapping Thrift's failures onto this module's two exceptions."""
        from osquery.extensions.ttypes import ExtensionCode
        from thrift.Thrift import TApplicationException, TException

        with self._lock:
            if self._manager is None:
                raise OsqueryUnavailable(self.socket_path, "not connected (call open() first)")
            try:
                return request(self._manager)
            except TApplicationException as exc:
                # A whole EXCEPTION message came back, so the stream is still usable.
                message = f"osqueryd failed the call: {exc}"
                raise OsqueryError(ExtensionCode.EXT_FATAL, message, sql) from exc
            except UnicodeDecodeError as exc:
                self._close_locked()
                message = f"osqueryd sent text that is not UTF-8: {exc}"
                raise OsqueryError(ExtensionCode.EXT_FAILED, message, sql) from exc
            except TException as exc:
                self._close_locked()
                reason = _describe_transport_error(exc, self.query_timeout)
                raise OsqueryUnavailable(self.socket_path, f"connection lost ({reason})") from exc
