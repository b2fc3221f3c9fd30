"""Charts as server-side SVG (pygal), inlined into the pages: no script, no CDN.

pygal's default configuration points its tooltip script at a CDN; every chart here sets
``js=[]`` and drops pygal's inline configuration script, so the SVG holds no script and
pulls nothing from the network (the dashboard must work offline); pygal's CSS stays
inlined in the SVG itself. Each chart has a title, and every page that
shows one also shows its numbers in a table, for screen readers and for exact values.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

import pygal  # type: ignore[import-untyped]
from pygal.style import Style  # type: ignore[import-untyped]

from collector.scoring import FleetScore
from collector.web.views import TrendPoint

__all__ = ["CHART_CONFIG", "distribution_chart", "trend_chart"]

# pygal appends a legacy ``sys.meta_path`` finder (for its map plugins, unused here) that
# makes every later failed import in the process emit an ImportWarning (and fail under
# ``-W error``): take it out again.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

#: High-contrast colours on white (WCAG AA for text); pass green first, then fail red.
_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1b1f24",
    foreground_strong="#1b1f24",
    foreground_subtle="#4a5563",
    colors=("#0b57d0", "#b3261e", "#146c2e", "#8a4b00"),
    font_family="system-ui, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    title_font_size=16,
    legend_font_size=13,
)

#: What every chart shares: no external JavaScript, inlined CSS, no XML declaration.
CHART_CONFIG: dict[str, Any] = {
    "js": [],
    "disable_xml_declaration": True,
    "style": _STYLE,
    "width": 800,
    "height": 300,
    "show_legend": False,
    "explicit_size": False,
    "pretty_print": False,
}


#: pygal always writes an inline ``<script>`` holding its configuration for the tooltip
#: script; with no tooltip script it does nothing, so it goes (the pages carry no script).
#: Its comments (generator credits) go too.
_SCRIPT = re.compile(r"<script\b.*?</script>|<!--.*?-->", re.DOTALL)


def _render(chart: Any) -> str:
    return _SCRIPT.sub("", str(chart.render(is_unicode=True)))


def trend_chart(points: Sequence[TrendPoint]) -> str:
    """The fleet score over time as a line (gaps where nothing was judged)."""
    span = points[-1].at - points[0].at if points else timedelta(0)
    spelling = "%Y-%m-%d" if span > timedelta(days=3) else "%m-%d %H:%M:%S"
    chart = pygal.DateTimeLine(
        title="Fleet score over time (%, UTC)",
        range=(0, 100),
        x_value_formatter=lambda at: at.astimezone(UTC).strftime(spelling),
        x_label_rotation=20,
        dots_size=3,
        **CHART_CONFIG,
    )
    chart.add("Fleet score", [(p.at, p.percent) for p in points])
    return _render(chart)


def distribution_chart(score: FleetScore) -> str:
    """How many hosts fall in each score bucket."""
    chart = pygal.Bar(title="Hosts by score", **CHART_CONFIG)
    chart.x_labels = [*score.distribution.keys(), "unscored"]
    chart.add("Hosts", [*score.distribution.values(), score.unscored])
    return _render(chart)
