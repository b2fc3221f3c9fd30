"""The JSON API under ``/api/v1``: one module per resource, gathered in ``router``.

Every endpoint names the one permission it needs (``collector.access.Permission``) through
``collector.web.auth.require``; reads run on the web's reader threads, changes on the
store's worker, and changes are recorded in the audit log with who made them.
"""

from __future__ import annotations

from fastapi import APIRouter

from collector.web.api import (
    access,
    audit,
    checks,
    drift,
    fleet,
    hosts,
    reports,
    secrets,
    waivers,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
for module in (fleet, hosts, checks, drift, waivers, reports, secrets, access, audit):
    router.include_router(module.router)
