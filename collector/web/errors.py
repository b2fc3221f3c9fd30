"""One error shape for the whole API: ``{"error": {"code": ..., "message": ...}}``.

Handlers raise ``ApiError`` (or let a domain ``ServiceError`` through); FastAPI's own
validation errors (422) and unknown routes (404) are rewritten into the same shape, so a
client parses every failure the same way. Pages (paths outside ``/api/``) are for people: an
unauthenticated visit is sent to the login page instead, and other errors get a short page.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from collector.service import AuthenticationError, ServiceError

__all__ = ["API_PREFIX", "ApiError", "ErrorBody", "ErrorDetail", "install_error_handlers"]

API_PREFIX = "/api/"
log = logging.getLogger("posture.collector.web")

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """What every failed API call answers."""

    error: ErrorDetail


class ApiError(Exception):
    """A failure with its HTTP status, a stable machine code and a message for people."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = headers or {}


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def _body(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    content = {"error": {"code": code, "message": message}}
    return JSONResponse(content, status_code=status, headers=headers)


def _page(request: Request, error: ApiError) -> Response:
    if error.status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    text = html.escape(error.message)
    page = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{error.status}</title>"
        f"<main><h1>{error.status}</h1><p>{text}</p><p><a href='/'>Back</a></p></main></html>"
    )
    return HTMLResponse(page, status_code=error.status, headers=error.headers)


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    if not _is_api(request):
        return _page(request, error)
    return _body(error.status, error.code, error.message, error.headers)


async def _service_error(request: Request, error: Exception) -> Response:
    """A domain refusal: 401 for credentials, 400 for every other rule the request broke."""
    status = 401 if isinstance(error, AuthenticationError) else 400
    return await _api_error(
        request, ApiError(status, str(error), None if status == 401 else "refused")
    )


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers or {})
    message = error.detail if isinstance(error.detail, str) else str(error.detail)
    return await _api_error(request, ApiError(error.status_code, message, headers=headers))


def _describe(errors: Any) -> str:
    parts = []
    for item in errors:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    return await _api_error(request, ApiError(422, _describe(error.errors())))


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return await _api_error(request, ApiError(500, "internal error; see the collector's log"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
