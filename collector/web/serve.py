"""Serving the web app inside the collector's event loop, beside the gRPC server.

One process, one store writer: the web app reaches the store through the same single worker
thread as ingest, so SQLite never sees two writers. Signals stay with the collector
(``collector.transport.server``): it stops the web server when it stops itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

__all__ = ["HttpEndpoint", "start_http"]

log = logging.getLogger("posture.collector.web")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the collector owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class HttpEndpoint:
    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_http(app: FastAPI, listen: str) -> HttpEndpoint:
    """Serve ``app`` on ``listen`` (HOST:PORT; port 0 picks one) until ``stop``."""
    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(
        app, host=host, port=int(port), log_level="warning", lifespan="off", access_log=False
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it (address in use...)
            raise OSError(f"cannot serve HTTP on {listen}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    url = f"http://{host}:{bound[1]}"
    log.info("dashboard and API on %s", url)
    return HttpEndpoint(url, server, task)
