"""The FastAPI application: JSON API under ``/api/v1`` and the dashboard's pages.

``create_app`` takes the running service and the worker thread that owns the store:
changes run there (``WebContext.call``), fleet-wide reads on reader threads with their own
connections (``WebContext.read``), so the event loop never blocks and heavy reads never
hold up ingest. The OpenAPI document is at ``/api/v1/openapi.json``. FastAPI's browsable
docs page is off: it loads Swagger UI from a CDN, and city networks and auditors' laptops may
be offline (nothing the collector serves fetches from elsewhere).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from collector.service import PostureService
from collector.web import api, pages
from collector.web.context import WebContext
from collector.web.errors import install_error_handlers

__all__ = ["WebContext", "create_app"]

_DESCRIPTION = """\
Posture's collector: fleet and host compliance, checks, drift, waivers, reports.

Authenticate with `Authorization: Bearer TOKEN` (create one with
`posture-collector token create --name NAME --role admin|analyst|auditor`), or log in
(`POST /api/v1/session`) and send the session cookie with the `X-CSRF-Token` header on
unsafe requests. Errors are `{"error": {"code", "message"}}`; instants are UTC ISO 8601.
"""


def create_app(service: PostureService, worker: ThreadPoolExecutor) -> FastAPI:
    app = FastAPI(
        title="Posture collector API",
        version="1",
        description=_DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = WebContext.for_service(service, worker)
    install_error_handlers(app)

    @app.get("/api/v1/health", tags=["meta"])
    async def health() -> dict[str, str]:
        """Liveness for load balancers; needs no token and tells nothing about the fleet."""
        return {"status": "ok"}

    app.include_router(api.router)
    _mount_pages(app)
    return app


def _mount_pages(app: FastAPI) -> None:
    """The dashboard: server-rendered pages and their static files."""
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(pages.STATIC_DIR)), name="static")
