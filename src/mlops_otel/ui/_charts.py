"""Server-side SVG charts with pygal: no JavaScript, no network, inlined in the pages.

pygal (pure Python, ~1 MB, no compiled dependencies) renders a chart in a few
milliseconds; matplotlib's SVG backend would add ~40 MB of dependencies and
~0.5 s of import time for the same line and bar charts. Every chart is rendered
with ``js=[]`` (pygal's default loads a tooltip script from the internet) and
carries an ``aria-label``; pygal's inline configuration script is removed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pygal
from markupsafe import Markup
from pygal.style import Style

__all__ = ["distribution_chart", "evidence_chart", "score_chart", "split_chart"]

_BASE = {
    "background": "#ffffff", "plot_background": "#ffffff", "foreground": "#1f2933", "foreground_strong": "#111827",
    "foreground_subtle": "#9aa5b1", "opacity": "0.55", "opacity_hover": "0.8", "transition": "0ms",
    "font_family": "DejaVu Sans, Helvetica, Arial, sans-serif", "label_font_size": 12, "major_label_font_size": 12,
    "legend_font_size": 13, "title_font_size": 15, "value_font_size": 11, "tooltip_font_size": 12,
}
BLUE, ORANGE, GREY, RED = "#2563eb", "#ea580c", "#64748b", "#dc2626"


def _style(*colors: str) -> Style:
    return Style(colors=colors, **_BASE)


def _config(title: str, colors: tuple[str, ...], **options: Any) -> dict[str, Any]:
    return {"title": title, "style": _style(*colors), "js": [], "disable_xml_declaration": True, "width": 1000,
            "height": 330, "explicit_size": False, "legend_at_bottom": True, "legend_at_bottom_columns": 4,
            "truncate_legend": -1, "truncate_label": -1, "print_values": False, "show_x_guides": False, **options}


_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL)


def _svg(chart: Any, label: str) -> Markup:
    # pygal inlines its tooltip configuration as a script even with js=[]: the pages run none.
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    # role/aria-label: the page's text alternative for the chart.
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{Markup.escape(label)}" ', 1)
    return Markup(svg)


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _visible_range(rows: Sequence[tuple[float, Mapping[str, Any]]], scale: float, margin: float,
                   ) -> tuple[float, float]:
    """The y range that shows the later three quarters of the path: the first, widest intervals are clipped."""
    if not rows:
        return (-1.0, 1.0)
    last = rows[-1][0]
    values = [0.0, margin]
    for n, e in rows:
        if n >= last / 4:
            values += [v * scale for v in (e.get("lower"), e.get("upper"), e.get("estimate")) if v is not None]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or 1.0
    return (low - pad, high + pad)


def evidence_chart(metric: str, points: Sequence[Mapping[str, Any]], *, tolerance: float | None,
                   lower_is_better: bool, percent: bool) -> Markup:
    """The effect estimate and its always-valid interval of *metric* against the samples seen.

    Values outside the visible range (the first, widest intervals) are drawn at its edge.
    """
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    chart = pygal.XY(**_config(f"{metric}: treatment - control{unit}", (BLUE, ORANGE, ORANGE, GREY, RED),
                               show_dots=True, dots_size=2, stroke=True,
                               value_formatter=lambda y: f"{y:+.3g}", x_value_formatter=lambda x: f"{x:,.0f}"))
    rows = [(p["n"], p["effects"].get(metric, {})) for p in points]
    rows = [(n, e) for n, e in rows if e.get("estimate") is not None]
    low, high = _visible_range(rows, scale, (tolerance or 0.0) * scale * (1 if lower_is_better else -1))

    def clip(value: float) -> float:
        return min(max(value * scale, low), high)

    chart.range = (low, high)
    chart.add("estimate", [(n, clip(e["estimate"])) for n, e in rows], stroke_style={"width": 2.5})
    chart.add("interval (always valid)", [(n, clip(e["lower"])) for n, e in rows if e.get("lower") is not None],
              stroke_style={"width": 1.5, "dasharray": "6,4"}, show_dots=False)
    chart.add(None, [(n, clip(e["upper"])) for n, e in rows if e.get("upper") is not None],
              stroke_style={"width": 1.5, "dasharray": "6,4"}, show_dots=False)
    if rows:
        xs = (rows[0][0], rows[-1][0])
        chart.add("no effect", [(x, 0.0) for x in xs], stroke_style={"width": 1}, show_dots=False)
        if tolerance:
            margin = (tolerance if lower_is_better else -tolerance) * scale
            chart.add("guardrail margin", [(x, margin) for x in xs],
                      stroke_style={"width": 1.5, "dasharray": "2,3"}, show_dots=False)
    better = "lower" if lower_is_better else "higher"
    return _svg(chart, f"Evidence path of {metric}: estimate and always-valid interval; {better} is better")


def split_chart(n_control: int, n_treatment: int, expected_share: float) -> Markup:
    """Observed results per variant against the configured split."""
    total = n_control + n_treatment
    chart = pygal.HorizontalBar(**_config("results per variant: observed vs configured split", (BLUE, GREY), height=200,
                                          value_formatter=lambda y: f"{y:,.0f}"))
    chart.x_labels = ["control", "treatment"]
    chart.add("observed", [n_control, n_treatment])
    chart.add("expected", [total * (1.0 - expected_share), total * expected_share])
    return _svg(chart, "Sample ratio: observed results per variant against the configured split")


def distribution_chart(name: str, labels: Sequence[str], reference: Sequence[float] | None,
                       production: Sequence[float] | None) -> Markup:
    """Reference and production distributions of one output or feature, side by side per bin (or category)."""
    chart = pygal.Bar(**_config(f"{name}: reference vs production", (GREY, ORANGE), width=560, height=340,
                                x_label_rotation=0 if len(labels) <= 8 else 30, show_minor_x_labels=False,
                                value_formatter=lambda y: f"{y:.1f}%"))
    chart.x_labels = list(labels)
    chart.x_labels_major = list(labels)[::4] if len(labels) > 8 else list(labels)
    chart.add("reference", [100.0 * v for v in reference] if reference is not None else [])
    chart.add("production", [100.0 * v for v in production] if production is not None else [])
    return _svg(chart, f"Distribution of {name}: reference and production")


def score_chart(points: Sequence[Mapping[str, Any]], *, threshold: float | None,
                clear_threshold: float | None) -> Markup:
    """The drift score over time against the alert threshold (and the clear threshold)."""
    rows = [p for p in points if p.get("time") is not None and p.get("score") is not None]
    chart = pygal.XY(**_config("drift score over time", (BLUE, RED, GREY), show_dots=True,
                               dots_size=3, x_value_formatter=_clock, x_labels_major_count=6,
                               show_minor_x_labels=False, value_formatter=lambda y: f"{y:.3f}",
                               range=(0.0, max([1.0] + [p["score"] for p in rows]))))
    chart.add("score", [(p["time"], p["score"]) for p in rows], stroke_style={"width": 2.5})
    if rows:
        xs = (rows[0]["time"], rows[-1]["time"])
        if xs[0] == xs[1]:
            xs = (xs[0] - 30.0, xs[1] + 30.0)
        per_point = [(p["time"], p["threshold"]) for p in rows if p.get("threshold") is not None]
        if len(per_point) == len(rows) and len({t for _, t in per_point}) > 1:
            chart.add("alert threshold", per_point, stroke_style={"width": 2, "dasharray": "6,4"}, show_dots=False)
        elif threshold is not None:
            chart.add("alert threshold", [(x, threshold) for x in xs], stroke_style={"width": 2, "dasharray": "6,4"},
                      show_dots=False)
        if clear_threshold is not None:
            chart.add("clear threshold", [(x, clear_threshold) for x in xs],
                      stroke_style={"width": 1, "dasharray": "2,3"}, show_dots=False)
    return _svg(chart, "Drift score over time against its alert threshold")
