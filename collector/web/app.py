"""The FastAPI application: JSON API under ``/api/v1`` and the dashboard's pages.

``create_app`` takes the running service and the worker thread that owns the store, so
handlers run domain calls there (``WebContext.call``) and never block the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from fastapi import FastAPI

from collector.service import PostureService

__all__ = ["WebContext", "create_app"]

T = TypeVar("T")


@dataclass(frozen=True)
class WebContext:
    service: PostureService
    worker: ThreadPoolExecutor

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """Run a domain call on the store's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)


def create_app(service: PostureService, worker: ThreadPoolExecutor) -> FastAPI:
    app = FastAPI(
        title="Posture collector API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.context = WebContext(service, worker)

    @app.get("/api/v1/health", tags=["meta"])
    async def health() -> dict[str, str]:
        """Liveness for load balancers; needs no token and tells nothing about the fleet."""
        return {"status": "ok"}

    return app
