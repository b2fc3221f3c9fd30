"""Presentation: compliance reports (table, JSON, CSV, HTML, PDF) and drift listings.

``stream_report`` reads the fleet as of an instant host by host (``collector.history``),
builds each host's part of the canonical document and hands it to a format's renderer
(``renderer_for``), which writes the file once the totals and the content digest are known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from collector.policy.model import Check, Pack
from collector.reports.html import CompactRenderer, HtmlRenderer, PdfRenderer
from collector.reports.model import SCHEMA, Report, collector_version
from collector.reports.render import (
    CsvRenderer,
    JsonRenderer,
    TableRenderer,
    file_sha256,
    sidecar,
)
from collector.reports.stream import Renderer, ReportSpec, stream_report

__all__ = [
    "FORMATS",
    "SCHEMA",
    "Renderer",
    "Report",
    "ReportSpec",
    "collector_version",
    "file_sha256",
    "renderer_for",
    "sidecar",
    "stream_report",
]

FORMATS = ("table", "json", "csv", "html", "pdf")


def renderer_for(
    fmt: str,
    checks: Mapping[str, Check],
    packs: Sequence[Pack],
    as_of: str,
    generated_at: str,
    *,
    one_host: bool,
    token: str | None = None,
) -> Renderer:
    """The renderer of format ``fmt``; a PDF is detailed for one host, compact otherwise.
    ``token`` is the CSV's digest placeholder (the same in every worker of one report)."""
    if fmt == "table":
        return TableRenderer(checks)
    if fmt == "json":
        return JsonRenderer()
    if fmt == "csv":
        return CsvRenderer(checks, packs, as_of, generated_at, token)
    if fmt == "html":
        return HtmlRenderer(checks)
    if fmt == "pdf":
        return PdfRenderer(HtmlRenderer(checks) if one_host else CompactRenderer(checks))
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
