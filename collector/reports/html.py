"""HTML and PDF reports: one self-contained HTML file, and PDFs rendered from HTML.

The page's frame (header, summary, controls, waivers, checks) comes from a Jinja2 template
with autoescaping on; each host's part is written as the report streams, escaped with
MarkupSafe (the escaper Jinja2 uses), because a template render per host would cost more
than the rest of the report. Fact values are whatever a host reported: every value is
escaped. Inline CSS, no link, script, image or font fetched from anywhere, so the file
opens offline and prints as it shows (page size, page numbers, one host per page).

PDF comes in two layouts, both HTML laid out by WeasyPrint with every URL fetch refused:

- a report for one host (``--host``) is the detailed HTML: every check that is not
  passing, with its reason, waiver and evidence rows;
- any other scope (a group, the fleet) is the **compact group layout**: the same header and
  summary pages, then per host one line (score and counts) and the ids of its failing and
  erroring checks (titles are in the checks table). Reasons, evidence rows, and the
  passing, not-applicable and unknown checks are in the JSON, CSV and HTML of the same
  report (same content digest). WeasyPrint lays out about ten pages a second and a box
  per line costs it more than the characters in it: three pages per host (the detailed
  layout) or a line per failing check (275 pages for 500 hosts of the benchmark fleet,
  72 s) cannot be printed within the 30 s target for a 500-host group; a few lines per
  host can.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from typing import IO, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from collector.policy.model import Check, Status
from collector.reports.stream import HostView, Renderer, Spool

__all__ = ["CompactRenderer", "HtmlRenderer", "PdfRenderer", "html_page", "pdf_bytes"]

_PASS, _NA = Status.PASS.value, Status.NOTAPPLICABLE.value
_FAILING_ORDER = (Status.FAIL.value, Status.ERROR.value)
_HOSTS_SLOT = "\x00posture-hosts\x00"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("collector.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    env.filters["share"] = _share
    return env


_ENV = _environment()


def _e(value: object) -> str:
    return str(escape(value))


def html_page(document: Mapping[str, Any]) -> tuple[str, str]:
    """The page around the hosts: (everything before them, everything after)."""
    summary = document["summary"]
    summary_rows: list[tuple[str, Mapping[str, Any]]] = [("All hosts in scope", summary)]
    summary_rows += [(f"Group {g['name']}", g["score"]) for g in document["summary_by_group"]]
    template = _ENV.get_template("report.html.j2")
    page = template.render(doc=document, summary_rows=summary_rows, hosts=Markup(_HOSTS_SLOT))
    before, after = page.split(_HOSTS_SLOT)
    return before, after


def _score_text(score: Mapping[str, Any]) -> str:
    return (
        f"{_pct(score['raw_percent'])} raw, {_pct(score['adjusted_percent'])} with waivers,"
        f" coverage {_share(score['coverage'])}: pass {score['passed']}, fail"
        f" {score['failed']}, error {score['errors']}, not applicable"
        f" {score['notapplicable']}, unknown {score['unknown']}, waived {score['waived']}"
    )


def _check_html(check: Check) -> tuple[str, str, str]:
    """Per check, escaped once per report: (title, severity, framework references)."""
    refs = "; ".join(
        f"{key} {', '.join(ref.control for ref in refs)}"
        for key, refs in sorted(check.frameworks.items())
    )
    return _e(check.title), _e(check.severity.value), _e(refs)


class HtmlRenderer(Renderer):
    """The detailed layout: the frame, then a section (a new printed page) per host with
    every check that is not passing in detail and the passing ones by id."""

    def __init__(self, checks: Mapping[str, Check]) -> None:
        self._checks = {cid: _check_html(check) for cid, check in checks.items()}
        self._spool = Spool()
        self._rows: dict[str, str] = {}

    def _evidence_rows(self, evidence: str) -> str:
        """Evidence rows as ``column=value`` lines, escaped (cached per evidence text)."""
        html = self._rows.get(evidence)
        if html is None:
            if len(self._rows) > 10_000:
                self._rows.clear()
            rows = json.loads(evidence)
            html = "".join(
                '<div class="evidence">'
                + "; ".join(f"{_e(c)}={_e(v)}" for c, v in row.items())
                + "</div>"
                for row in rows
            )
            self._rows[evidence] = html
        return html

    def _finding(self, r: Any) -> str:
        title, severity, refs = self._checks[r.check_id]
        waived = " (waived)" if r.waived else ""
        parts = [
            f'<div class="finding{" waived" if r.waived else ""}">',
            f'<span class="status {r.status}">{r.status}{waived}</span>',
            f' <b>{title}</b> <span class="mono">{_e(r.check_id)}</span>',
            f' <span class="note">{severity}; since {r.since}; {refs}</span>',
        ]
        if r.reason:
            parts.append(f'<div class="note">{_e(r.reason)}</div>')
        if r.waiver_note:
            parts.append(f'<div class="note">{_e(r.waiver_note)}</div>')
        if r.evidence is None:
            parts.append(
                '<div class="note">evidence sha256 <span class="mono">'
                f"{_e(r.evidence_sha256)}</span> (rows in the report for this host)</div>"
            )
        elif r.evidence != "[]":
            parts.append(self._evidence_rows(r.evidence))
            parts.append(
                '<div class="note">evidence sha256 <span class="mono">'
                f"{_e(r.evidence_sha256)}</span></div>"
            )
        parts.append("</div>")
        return "".join(parts)

    def host(self, view: HostView) -> None:
        r = view.record
        passed = [x.check_id for x in view.results if x.status == _PASS]
        na = [x.check_id for x in view.results if x.status == _NA]
        findings = [self._finding(x) for x in view.results if x.status not in (_PASS, _NA)]
        parts = [
            f'<section class="host" id="host-{r.id}">',
            f"<h2>Host {r.id}: {_e(r.hostname)}{' (stale)' if r.stale else ''}</h2>",
            '<div class="facts">',
            f'<div><b>Hardware UUID</b> <span class="mono">{_e(r.hardware_uuid)}</span>;'
            f" <b>serial</b> {_e(r.hardware_serial)}</div>",
            f"<div><b>OS</b> {_e(r.os_version)} ({_e(r.platform)}); <b>agent</b>"
            f" {_e(r.agent_version)}; <b>groups</b> {_e(', '.join(r.groups) or 'none')}</div>",
            f"<div><b>Enrolled</b> {r.enrolled_at}; <b>last seen</b>"
            f" {r.last_seen_at or 'never'}</div>",
            f"<div><b>Facts collected</b> {r.facts_collected_at or 'never'}; <b>evaluated</b>"
            f" {r.evaluated_at or 'never'}</div>",
            f"<div><b>Score</b> {_score_text(view.score)}</div>",
            "</div>",
            *(findings or ["<p>No failing, erroring or unknown check.</p>"]),
        ]
        for label, ids in (("Passed", passed), ("Not applicable", na)):
            if ids:
                parts.append(
                    f'<p class="note"><b>{label} ({len(ids)}):</b>'
                    f' <span class="mono">{_e(", ".join(ids))}</span></p>'
                )
        parts.append("</section>\n")
        self._spool.write("\n".join(parts))

    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        before, after = html_page(document)
        out.write(before.encode())
        for chunk in self._spool.chunks():
            out.write(chunk)
        out.write(after.encode())

    def close(self) -> None:
        self._spool.close()

    def spools(self) -> list[Spool]:
        return [self._spool]


class CompactRenderer(Renderer):
    """The compact group layout (module docstring) as HTML, for the PDF of a group."""

    def __init__(self, checks: Mapping[str, Check]) -> None:
        self._checks = {cid: _check_html(check) for cid, check in checks.items()}
        self._spool = Spool()

    def host(self, view: HostView) -> None:
        r, s = view.record, view.score
        stale = " (stale)" if r.stale else ""
        lines = [
            f'<div class="hostline">Host {r.id} {_e(r.hostname)}{stale}: score'
            f" {_pct(s['raw_percent'])} raw, {_pct(s['adjusted_percent'])} with waivers;"
            f" pass {s['passed']}, fail {s['failed']}, error {s['errors']}, unknown"
            f" {s['unknown']}, waived {s['waived']}; collected"
            f" {r.facts_collected_at or 'never'}; {_e(', '.join(r.groups) or 'no group')}</div>"
        ]
        for status in _FAILING_ORDER:
            ids = [
                _e(x.check_id) + ("&nbsp;(waived)" if x.waived else "")
                for x in view.results
                if x.status == status
            ]
            if ids:
                lines.append(
                    f'<div class="line"><span class="status {status}">{status}</span>'
                    f' ({len(ids)}): <span class="mono">{", ".join(ids)}</span></div>'
                )
        self._spool.write("\n".join(lines) + "\n")

    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        before, after = html_page(document)
        out.write(before.encode())
        out.write(
            b'<h2 style="break-before: page">Hosts</h2><p class="note">Compact group layout:'
            b" one line per host with its score and counts, then the ids of its failing and"
            b" erroring checks (titles in the Checks table above). Reasons, evidence rows and"
            b" the passing, not applicable and unknown checks are in the JSON, CSV and HTML of"
            b' this report (same content SHA-256).</p><div class="compact">\n'
        )
        for chunk in self._spool.chunks():
            out.write(chunk)
        out.write(b"</div>\n" + after.encode())

    def close(self) -> None:
        self._spool.close()

    def spools(self) -> list[Spool]:
        return [self._spool]


def pdf_bytes(html: str) -> bytes:
    """HTML laid out as PDF (WeasyPrint, imported lazily: it takes a second to load). The
    fetcher allows no URL scheme at all, so nothing is read from disk or network."""
    logging.getLogger("weasyprint").setLevel(logging.WARNING)  # not a line per page on stderr
    with warnings.catch_warnings():
        # Debian 12 ships no libharfbuzz-subset; WeasyPrint works without it and says so.
        warnings.filterwarnings("ignore", "HarfBuzz-Subset", DeprecationWarning)
        from weasyprint import HTML  # type: ignore[import-untyped]
        from weasyprint.urls import URLFetcher  # type: ignore[import-untyped]

    document: bytes = HTML(string=html, url_fetcher=URLFetcher(allowed_protocols=())).write_pdf()
    return document


class PdfRenderer(Renderer):
    """A PDF of another renderer's HTML (detailed for one host, compact otherwise)."""

    def __init__(self, html: Renderer) -> None:
        self._html = html

    def host(self, view: HostView) -> None:
        self._html.host(view)

    def finish(self, document: Mapping[str, Any], out: IO[bytes]) -> None:
        page = Spool()
        try:
            self._html.finish(document, page.file)
            page.file.seek(0)
            html = page.file.read().decode()
        finally:
            page.close()
        out.write(pdf_bytes(html))

    def close(self) -> None:
        self._html.close()

    def spools(self) -> list[Spool]:
        return self._html.spools()
