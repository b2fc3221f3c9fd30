"""The dashboard's pages: server-rendered HTML for people, mounted by ``create_app``.

Pages call the domain, never the JSON API over HTTP: fleet-wide reads go to the web's
reader threads (``WebContext.read``, a connection of their own, so ingest is never held
up), changes to the store's worker (``WebContext.call``). Every page needs a signed-in
person (``collector.web.auth``'s session cookie) with the ``read`` permission; forms carry
the session's CSRF token and each change checks its own permission, so an auditor sees no
approve buttons and gets 403 if they post anyway. Styles come from ``static/`` and charts
are inline SVG: no script and no CDN, so the dashboard works on an offline network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from collector.access import Permission, Principal
from collector.drift import EventKind, StoredEvent
from collector.governance import Governance, WaiverRequest
from collector.model import Host
from collector.policy.model import FRAMEWORKS, Status
from collector.reporting import ReportRequest, issue_report_spooled
from collector.reports import FORMATS
from collector.service import PostureService, ServiceError
from collector.waivers import WaiverScope
from collector.web import auth
from collector.web.charts import distribution_chart, trend_chart
from collector.web.context import WebContext
from collector.web.downloads import spooled_response
from collector.web.errors import ApiError
from collector.web.views import (
    SORTS,
    FleetSummary,
    HostFilter,
    SummaryCache,
    TrendCache,
    filter_hosts,
    host_detail,
    worst_checks,
)

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "router"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Drift events per page of the feed, and on the overview.
DRIFT_PAGE, DRIFT_NEWEST = 100, 10
#: Report formats and how they are served.
_MEDIA = {
    "table": ("text/plain; charset=utf-8", "txt"),
    "json": ("application/json", "json"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "html": ("text/html; charset=utf-8", "html"),
    "pdf": ("application/pdf", "pdf"),
}

#: Autoescaping on for every template: hostnames, evidence and justifications come from
#: agents and people, never trusted as HTML.
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True)
)
router = APIRouter(include_in_schema=False)


def _when(value: datetime | None) -> str:
    return "never" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pct(value: float) -> str:
    return f"{value:.1f} %"


templates.env.filters["when"] = _when
templates.env.filters["pct"] = _pct


# Who is asking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The signed-in person (or token) behind a page request, with the session's CSRF token."""

    principal: Principal
    csrf: str

    def can(self, permission: Permission) -> bool:
        return self.principal.can(permission)


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


def _trends(request: Request) -> TrendCache:
    trends: TrendCache | None = getattr(request.app.state, "dashboard_trends", None)
    if trends is None:
        trends = request.app.state.dashboard_trends = TrendCache()
    return trends


def _changed(request: Request) -> None:
    """After a change made here: the next page rebuilds the fleet-wide views."""
    _context(request).summaries.invalidate()
    _trends(request).invalidate()


async def _viewer(request: Request, permission: Permission = Permission.READ) -> Viewer:
    """The signed-in viewer (``auth.require``: 401 sends people to the login page, 403
    without the permission, and unsafe requests must carry the session's CSRF token)."""
    principal = await auth.require(permission)(request)
    return Viewer(principal, auth.csrf_token(request) or "")


async def _form(request: Request) -> dict[str, str]:
    """The posted form's text fields (``_viewer`` has checked its CSRF token already)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


#: What a redirect after a change may tell the next page. Only these fixed sentences are
#: shown (with a waiver number): text taken from the URL would let anyone craft a link
#: that makes the dashboard say something it never said.
_NOTICES = {
    "signed-out": "Signed out.",
    "waiver-requested": "Waiver {waiver} requested; another person must approve it.",
    "waiver-approved": "Waiver {waiver} approved.",
    "waiver-revoked": "Waiver {waiver} revoked.",
}


def _notice(request: Request) -> str | None:
    template = _NOTICES.get(request.query_params.get("done", ""))
    waiver = request.query_params.get("waiver", "")
    if template is None or ("{waiver}" in template and not waiver.isdigit()):
        return None
    return template.format(waiver=waiver)


def _render(
    request: Request, template: str, viewer: Viewer | None, title: str, **context: Any
) -> HTMLResponse:
    context |= {
        "title": title,
        "user": viewer.principal if viewer else None,
        "csrf": viewer.csrf if viewer else "",
        "section": context.get("section", request.url.path),
        "notice": context.get("notice") or _notice(request),
        "error": context.get("error"),
    }
    status = int(context.pop("status_code", 200))
    response: HTMLResponse = templates.TemplateResponse(
        request, template, context, status_code=status
    )
    return response


async def _summary(request: Request) -> FleetSummary:
    return await _context(request).read(_context(request).summaries.get)


# Sign in and out ---------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    """Only local paths: a login form must not send people to another site."""
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if local else "/"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    """The sign-in form: username and password, or an API token."""
    return _render(request, "login.html", None, "Sign in", next=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Sign in with a password or an API token; back to the form with the reason if wrong."""
    fields = await _form(request)
    target = _safe_next(fields.get("next", "/"))
    try:
        if fields.get("token"):
            session = await auth.login_with_token(request, fields["token"])
        else:
            name, password = fields.get("username", ""), fields.get("password", "")
            session = await auth.login_with_password(request, name, password)
    except ApiError as error:
        return _render(
            request, "login.html", None, "Sign in", next=target, error=error.message,
            status_code=error.status,
        )  # fmt: skip
    response = RedirectResponse(target, status_code=303)
    auth.start_session(request, response, session)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _viewer(request)
    response = RedirectResponse("/login?done=signed-out", status_code=303)
    await auth.end_session(request, response)
    return response


# Fleet ------------------------------------------------------------------------------------


def _hosts_of(summary: FleetSummary, events: Iterable[StoredEvent]) -> dict[int, Host]:
    """The hosts named by ``events``, for links (a host deleted since is named by id)."""
    ids = {event.host_id for event in events}
    return {i: summary.by_id[i].host for i in ids if i in summary.by_id}


def _overview_data(
    service: PostureService, summaries: SummaryCache, trends: TrendCache
) -> dict[str, Any]:
    summary = summaries.get(service)
    trend = trends.get(service)
    drift = service.store.newest_drift(DRIFT_NEWEST)
    return {
        "summary": summary,
        "fleet": summary.fleet,
        "stale": sum(row.stale for row in summary.hosts),
        "trend": trend,
        "trend_svg": trend_chart(trend) if trend else "",
        "distribution_svg": distribution_chart(summary.fleet),
        "worst": worst_checks(summary),
        "drift": drift,
        "hosts": {
            e.host_id: summary.by_id[e.host_id].host for e in drift if e.host_id in summary.by_id
        },
        "checks": service.checks,
    }


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    viewer = await _viewer(request)
    context = _context(request)
    data = await context.read(_overview_data, context.summaries, _trends(request))
    return _render(request, "overview.html", viewer, "Fleet overview", **data)


@router.get("/groups", response_class=HTMLResponse)
async def groups(request: Request) -> HTMLResponse:
    viewer = await _viewer(request)
    summary = await _summary(request)
    return _render(
        request, "groups.html", viewer, "Groups", summary=summary, groups=summary.groups.items()
    )


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _host_filter(request: Request) -> HostFilter:
    """The hosts list's query from the URL; nonsense values fall back to the defaults."""
    params = request.query_params
    stale = {"yes": True, "no": False}.get(params.get("stale", ""))
    sort = params.get("sort", "hostname")
    page = params.get("page", "1")
    return HostFilter(
        q=params.get("q", "").strip(),
        group=params.get("group", ""),
        platform=params.get("platform", ""),
        check=params.get("check", "").strip(),
        min_score=_number(params.get("min_score")),
        max_score=_number(params.get("max_score")),
        stale=stale,
        sort=sort if sort in SORTS else "hostname",
        descending=params.get("dir") == "desc",
        page=int(page) if page.isdigit() else 1,
    )


def _query_string(query: HostFilter, **changes: object) -> str:
    values: dict[str, object] = {
        "q": query.q,
        "group": query.group,
        "platform": query.platform,
        "check": query.check,
        "min_score": "" if query.min_score is None else query.min_score,
        "max_score": "" if query.max_score is None else query.max_score,
        "stale": {True: "yes", False: "no", None: ""}[query.stale],
        "sort": query.sort,
        "dir": "desc" if query.descending else "asc",
        "page": query.page,
    } | changes
    return "/hosts?" + urlencode({k: v for k, v in values.items() if v not in ("", None)})


_HOST_COLUMNS = (
    ("hostname", "Host"),
    ("platform", "Platform"),
    ("", "Groups"),
    ("score", "Score"),
    ("failed", "Failed"),
    ("last_seen", "Last collection (UTC)"),
    ("", "Failing checks"),
)


@router.get("/hosts", response_class=HTMLResponse)
async def hosts(request: Request) -> HTMLResponse:
    viewer = await _viewer(request)
    query = _host_filter(request)
    summary = await _summary(request)
    page = filter_hosts(summary, query)
    sort_links = {
        key: _query_string(
            query, sort=key, dir="desc" if key == query.sort and not query.descending else "asc",
            page=1,
        )
        for key, _ in _HOST_COLUMNS
        if key
    }  # fmt: skip
    return _render(
        request, "hosts.html", viewer, "Hosts",
        summary=summary, query=query, page=page, columns=_HOST_COLUMNS, sort_links=sort_links,
        group_names=sorted(summary.groups), check_ids=sorted(summary.checks),
        prev_link=_query_string(query, page=page.page - 1) if page.page > 1 else "",
        next_link=_query_string(query, page=page.page + 1) if page.page < page.pages else "",
    )  # fmt: skip


@router.get("/hosts/{host_id}", response_class=HTMLResponse)
async def host(request: Request, host_id: int) -> HTMLResponse:
    viewer = await _viewer(request)
    try:
        detail = await _context(request).read(host_detail, host_id)
    except ServiceError as error:
        raise ApiError(404, str(error)) from None
    now = _context(request).service.clock()
    return _render(
        request, "host.html", viewer, detail.view.host.identity.hostname,
        section="/hosts", view=detail.view, results=detail.results,
        facts=detail.facts, drift=detail.drift, waivers=detail.waivers,
        waiver_caption="Waivers that cover this host", checks=_context(request).service.checks,
        can_write=viewer.can(Permission.WAIVER_WRITE), now=now,
    )  # fmt: skip


# Checks and drift -------------------------------------------------------------------------


@router.get("/checks", response_class=HTMLResponse)
async def checks(request: Request) -> HTMLResponse:
    viewer = await _viewer(request)
    summary = await _summary(request)
    rows = sorted(summary.checks.values(), key=lambda r: (-r.failing, r.check.id))
    return _render(
        request, "checks.html", viewer, "Checks", summary=summary, rows=rows,
        passed=Status.PASS, errored=Status.ERROR,
    )  # fmt: skip


@router.get("/checks/{check_id}", response_class=HTMLResponse)
async def check(request: Request, check_id: str) -> HTMLResponse:
    viewer = await _viewer(request)
    summary = await _summary(request)
    row = summary.checks.get(check_id)
    if row is None:
        raise ApiError(404, f"no check {check_id!r} in the loaded packs")
    failing_ids = summary.failing_hosts.get(check_id, ())
    failing = [summary.by_id[i] for i in failing_ids[:200] if i in summary.by_id]
    return _render(
        request, "check.html", viewer, row.check.title, section="/checks",
        summary=summary, row=row, failing=failing, failing_total=len(failing_ids),
        framework_names=FRAMEWORKS,
    )  # fmt: skip


def _drift_data(
    service: PostureService, cache: SummaryCache, kind: EventKind | None, group: str,
    before: int | None,
) -> dict[str, Any]:  # fmt: skip
    summary = cache.get(service)
    ids = None
    if group:
        ids = frozenset(row.host.id for row in summary.hosts if group in row.groups)
    events = service.store.newest_drift(DRIFT_PAGE, before, kind, ids)
    return {
        "events": events,
        "hosts": _hosts_of(summary, events),
        "group_names": sorted(summary.groups),
    }


@router.get("/drift", response_class=HTMLResponse)
async def drift(
    request: Request, kind: str = "", group: str = "", before: int | None = None
) -> HTMLResponse:
    viewer = await _viewer(request)
    event_kind = EventKind(kind) if kind in {k.value for k in EventKind} else None
    data = await _context(request).read(
        _drift_data, _context(request).summaries, event_kind, group, before
    )
    events = data["events"]
    older = ""
    if len(events) == DRIFT_PAGE:
        params = {"kind": kind, "group": group, "before": events[-1].id}
        older = "/drift?" + urlencode({k: v for k, v in params.items() if v})
    return _render(
        request, "drift.html", viewer, "Drift", kind=kind, group=group, older_link=older,
        kinds=[k.value for k in EventKind], checks=_context(request).service.checks, **data,
    )  # fmt: skip


# Waivers ----------------------------------------------------------------------------------


def _waiver_form(params: Any) -> dict[str, str]:
    keys = ("check", "scope", "target", "expires", "ticket", "justification",
            "compensating_control")  # fmt: skip
    form = {key: str(params.get(key, "")) for key in keys}
    form["scope"] = form["scope"] or "host"
    return form


async def _waivers_page(
    request: Request, viewer: Viewer, form: dict[str, str], **extra: Any
) -> HTMLResponse:
    service = _context(request).service
    waivers = await _context(request).read(lambda reader: reader.store.list_waivers())
    waivers = sorted(waivers, key=lambda w: -w.id)
    return _render(
        request, "waivers.html", viewer, "Waivers", waivers=waivers, form=form,
        checks=sorted(service.checks.values(), key=lambda c: c.id), now=service.clock(),
        can_write=viewer.can(Permission.WAIVER_WRITE), waiver_caption="Every waiver, newest first",
        **extra,
    )  # fmt: skip


@router.get("/waivers", response_class=HTMLResponse)
async def waivers(request: Request) -> HTMLResponse:
    viewer = await _viewer(request)
    return await _waivers_page(request, viewer, _waiver_form(request.query_params))


def _expiry(text: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
    except ValueError:
        raise ServiceError(f"expiry {text!r} is not a date (YYYY-MM-DD)") from None


def _scope(text: str) -> WaiverScope:
    try:
        return WaiverScope(text)
    except ValueError:
        raise ServiceError(f"unknown waiver scope {text!r}: host, group or fleet") from None


@router.post("/waivers", response_class=HTMLResponse)
async def request_waiver(request: Request) -> Response:
    viewer = await _viewer(request, Permission.WAIVER_WRITE)
    fields = await _form(request)
    form = _waiver_form(fields) | {"check": fields.get("check_id", "")}
    context = _context(request)
    try:
        scope = _scope(form["scope"])
        waiver_request = WaiverRequest(
            form["check"], scope, form["target"].strip() or None, form["justification"],
            form["ticket"], form["compensating_control"], _expiry(form["expires"]),
        )  # fmt: skip
        governance = Governance(context.service)
        waiver = await context.call(
            governance.request_waiver, waiver_request, viewer.principal.actor
        )
    except ServiceError as error:
        return await _waivers_page(request, viewer, form, error=str(error), status_code=400)
    _changed(request)
    done = urlencode({"done": "waiver-requested", "waiver": waiver.id})
    return RedirectResponse(f"/waivers?{done}", status_code=303)


async def _waiver_action(request: Request, waiver_id: int, approve: bool) -> Response:
    viewer = await _viewer(request, Permission.WAIVER_WRITE)
    fields = await _form(request)
    context = _context(request)
    governance = Governance(context.service)
    actor = viewer.principal.actor
    try:
        if approve:
            await context.call(governance.approve_waiver, waiver_id, actor)
        else:
            await context.call(
                governance.revoke_waiver, waiver_id, actor, fields.get("reason", "").strip()
            )
    except ServiceError as error:
        form = _waiver_form({})
        return await _waivers_page(request, viewer, form, error=str(error), status_code=400)
    _changed(request)
    done = urlencode(
        {"done": "waiver-approved" if approve else "waiver-revoked", "waiver": waiver_id}
    )
    return RedirectResponse(f"/waivers?{done}", status_code=303)


@router.post("/waivers/{waiver_id}/approve")
async def approve_waiver(request: Request, waiver_id: int) -> Response:
    return await _waiver_action(request, waiver_id, approve=True)


@router.post("/waivers/{waiver_id}/revoke")
async def revoke_waiver(request: Request, waiver_id: int) -> Response:
    return await _waiver_action(request, waiver_id, approve=False)


# Reports ----------------------------------------------------------------------------------


async def _reports_page(request: Request, viewer: Viewer, **extra: Any) -> HTMLResponse:
    summary = await _summary(request)
    return _render(
        request, "reports.html", viewer, "Reports", group_names=sorted(summary.groups),
        frameworks=FRAMEWORKS, formats=FORMATS, **extra,
    )  # fmt: skip


@router.get("/reports", response_class=HTMLResponse)
async def reports(request: Request) -> HTMLResponse:
    viewer = await _viewer(request, Permission.REPORT)
    return await _reports_page(request, viewer)


def _report_request(fields: dict[str, str], user: str) -> ReportRequest:
    fmt = fields.get("format", "csv")
    if fmt not in FORMATS:
        raise ServiceError(f"unknown format {fmt!r}: {', '.join(FORMATS)}")
    as_of = fields.get("as_of", "")
    return ReportRequest(
        fmt=fmt,
        user=user,
        group=fields.get("group") or None,
        framework=fields.get("framework") or None,
        as_of=_expiry(as_of) if as_of else None,
    )


def _filename(request: ReportRequest, at: datetime) -> str:
    scope = "-".join(part for part in (request.group, request.framework) if part) or "fleet"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scope)
    return f"posture-{safe}-{at.strftime('%Y%m%dT%H%M%SZ')}.{_MEDIA[request.fmt][1]}"


@router.post("/reports")
async def download_report(request: Request) -> Response:
    """Issue a report (registered for ``verify``, like the CLI's) and send it as a file."""
    viewer = await _viewer(request, Permission.REPORT)
    fields = await _form(request)
    context = _context(request)
    try:
        report_request = _report_request(fields, viewer.principal.actor)
        issued = await context.call(issue_report_spooled, context.service, report_request)
    except ServiceError as error:
        return await _reports_page(request, viewer, error=str(error), status_code=400)
    filename = _filename(report_request, context.service.clock())
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Report-SHA256": issued.sha256,
    }
    return spooled_response(issued, _MEDIA[report_request.fmt][0], headers)
