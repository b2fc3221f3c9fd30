"""What the API's resource modules share: the context, lookups, audited changes, paging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request

from collector.model import Host
from collector.service import PostureService, ServiceError
from collector.web.auth import context
from collector.web.context import WebContext
from collector.web.errors import ApiError, ErrorBody

__all__ = ["ERRORS", "Ctx", "Limit", "Offset", "audited", "get_host"]

T = TypeVar("T")

Ctx = Annotated[WebContext, Depends(context)]
Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")]

#: The error answers every protected endpoint may give, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "refused by a rule of the domain"),
        (401, "no or bad credentials"),
        (403, "the role may not do this, or the CSRF token is missing"),
        (404, "no such thing"),
        (422, "the request is malformed"),
    )
}


def get_host(service: PostureService, host_id: int) -> Host:
    """The host, or a 404."""
    host = service.store.get_host(host_id)
    if host is None:
        raise ApiError(404, f"no host {host_id}")
    return host


def audited(
    service: PostureService,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, object],
    function: Callable[..., T],
    *args: Any,
) -> T:
    """Run a change and record it with its outcome (``denied`` for a domain refusal)."""
    with service.audit.recording(actor, action, target, detail, refused=ServiceError):
        return function(*args)


def client(request: Request) -> str:
    return request.client.host if request.client else ""
