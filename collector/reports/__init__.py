"""Presentation: compliance reports (table, JSON, CSV, HTML, PDF) and drift listings.

``build_report`` turns a ``collector.history.Snapshot`` into the canonical document;
``render`` turns the document into a file's bytes in any format.
"""

from __future__ import annotations

from collector.reports.html import render_html, render_pdf
from collector.reports.model import SCHEMA, Report, build_report, collector_version
from collector.reports.render import (
    file_sha256,
    render_csv,
    render_json,
    render_table,
    sidecar,
)

__all__ = [
    "FORMATS",
    "SCHEMA",
    "Report",
    "build_report",
    "collector_version",
    "file_sha256",
    "render",
    "sidecar",
]

FORMATS = ("table", "json", "csv", "html", "pdf")


def render(report: Report, fmt: str) -> bytes:
    """The report as the bytes of a file in format ``fmt``."""
    if fmt == "pdf":
        return render_pdf(report)
    text = {"table": render_table, "json": render_json, "csv": render_csv, "html": render_html}
    if fmt not in text:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return text[fmt](report).encode()
