"""HTML and PDF reports: one self-contained HTML file, and a PDF rendered from it.

The HTML comes from a Jinja2 template with autoescaping on (fact values are whatever a
host reported), inline CSS and no link, script, image or font fetched from anywhere, so it
opens offline and prints as it shows (page size, page numbers, one host per page). The PDF
is that same HTML laid out by WeasyPrint, with every URL fetch refused.
"""

from __future__ import annotations

import warnings
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from collector.reports.model import Report

__all__ = ["render_html", "render_pdf"]


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


def render_html(report: Report) -> str:
    doc = report.document
    summary_rows: list[tuple[str, dict[str, Any]]] = [("All hosts in scope", doc["summary"])]
    summary_rows += [(f"Group {group['name']}", group["score"]) for group in doc["groups"]]
    checks = {check["id"]: check for check in doc["checks"]}
    template = _ENV.get_template("report.html.j2")
    return template.render(doc=doc, checks=checks, summary_rows=summary_rows)


def render_pdf(report: Report) -> bytes:
    """The HTML report as PDF (imported lazily: WeasyPrint takes a second to load). The
    fetcher allows no URL scheme at all, so nothing is read from disk or network."""
    with warnings.catch_warnings():
        # Debian 12 ships no libharfbuzz-subset; WeasyPrint works without it and says so.
        warnings.filterwarnings("ignore", "HarfBuzz-Subset", DeprecationWarning)
        from weasyprint import HTML  # type: ignore[import-untyped]
        from weasyprint.urls import URLFetcher  # type: ignore[import-untyped]

    html = HTML(string=render_html(report), url_fetcher=URLFetcher(allowed_protocols=()))
    document: bytes = html.write_pdf()
    return document
