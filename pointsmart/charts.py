"""Charts drawn on the server as inline SVG: no JavaScript, no CDN, readable on paper.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` listing its figures,
a ``<title>`` on every bar and point, and its labels and values as text. Series differ by
shape, dash and fill pattern as well as colour, so a black-and-white print still tells them
apart. Sized for a 360 px phone (about one SVG unit per pixel there); wider screens scale it up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 320
FONT = 12
#: Per series: colour, line dash, point marker, bar fill ("solid", "hatch" or "outline").
STYLES = (
    {"colour": "#1f3f66", "dash": "", "marker": "circle", "fill": "solid"},
    {"colour": "#b3261e", "dash": "6 3", "marker": "square", "fill": "hatch"},
    {"colour": "#444444", "dash": "2 3", "marker": "triangle", "fill": "outline"},
)


@dataclass(frozen=True)
class Series:
    """A named row of figures, one per label of the chart."""

    label: str
    values: Sequence[int | float]


def _number(value: int | float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _nice_step(span: float, ticks: int = 4) -> float:
    """Return a round step (1, 2 or 5 × 10ⁿ) dividing ``span`` into about ``ticks`` parts."""
    raw = max(span, 1) / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return max(factor * power, 1)
    return 10 * power  # pragma: no cover - the loop always returns


def _svg(prefix: str, height: float, title: str, desc: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height:g}"'
        f' width="{WIDTH}" height="{height:g}" role="img"'
        f' aria-labelledby="{prefix}-title {prefix}-desc" font-size="{FONT}"'
        f' font-family="system-ui, sans-serif">'
        f'<title id="{prefix}-title">{escape(title)}</title>'
        f'<desc id="{prefix}-desc">{escape(desc)}</desc>'
        f"{_defs(prefix)}{''.join(body)}</svg>"
    )


def _defs(prefix: str) -> str:
    colour = STYLES[1]["colour"]
    return (
        f'<defs><pattern id="{prefix}-hatch" width="5" height="5" patternUnits="userSpaceOnUse"'
        f' patternTransform="rotate(45)"><rect width="5" height="5" fill="#ffffff"/>'
        f'<line x1="0" y1="0" x2="0" y2="5" stroke="{colour}" stroke-width="3"/></pattern></defs>'
    )


def _fill(prefix: str, index: int) -> str:
    style = STYLES[index % len(STYLES)]
    if style["fill"] == "hatch":
        return f'fill="url(#{prefix}-hatch)" stroke="{style["colour"]}" stroke-width="1"'
    if style["fill"] == "outline":
        return f'fill="#ffffff" stroke="{style["colour"]}" stroke-width="1.5"'
    return f'fill="{style["colour"]}"'


def _marker(index: int, x: float, y: float) -> str:
    style = STYLES[index % len(STYLES)]
    colour = style["colour"]
    if style["marker"] == "square":
        return (
            f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="#ffffff"'
            f' stroke="{colour}" stroke-width="1.5"/>'
        )
    if style["marker"] == "triangle":
        return (
            f'<path d="M{x:.1f} {y - 4.5:.1f} L{x + 4:.1f} {y + 3:.1f} L{x - 4:.1f} {y + 3:.1f} Z"'
            f' fill="{colour}"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'


def _legend(prefix: str, series: Sequence[Series], kind: str, y: float) -> str:
    """Return a legend row: each series' line and marker (or fill) and its name."""
    parts, x = [], 4.0
    for index, s in enumerate(series):
        style = STYLES[index % len(STYLES)]
        if kind == "line":
            dash = f' stroke-dasharray="{style["dash"]}"' if style["dash"] else ""
            parts.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 22:.1f}" y2="{y:.1f}"'
                f' stroke="{style["colour"]}" stroke-width="2"{dash}/>'
            )
            parts.append(_marker(index, x + 11, y))
            x += 26
        else:
            parts.append(
                f'<rect x="{x:.1f}" y="{y - 5:.1f}" width="14" height="10" {_fill(prefix, index)}/>'
            )
            x += 18
        parts.append(f'<text x="{x:.1f}" y="{y + 4:.1f}">{escape(s.label)}</text>')
        # CJK glyphs are about a font size wide, Latin ones about half.
        x += sum(FONT if ord(c) > 0x2E80 else FONT * 0.6 for c in s.label) + 12
    return f'<g class="legend">{"".join(parts)}</g>'


def line_chart(
    prefix: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    ticks: Sequence[str] | None = None,
    spans: Sequence[tuple[str, int, int]] = (),
) -> Markup:
    """Return a line chart of several series over the same labels (e.g. months).

    ``labels`` name each point in titles and the description (e.g. "2026-11"); ``ticks`` are
    the axis texts under each point (e.g. "11"), by default the labels themselves; ``spans``
    a second axis line naming runs of points, as (text, first index, last index), e.g. the
    year under its months.
    """
    ticks = list(ticks or labels)
    values = [v for s in series for v in s.values] or [0]
    low, high = min(0, min(values)), max(0, max(values))
    step = _nice_step(high - low)
    bottom = math.floor(low / step) * step
    top = max(math.ceil(high / step) * step, bottom + step)
    left, right, legend_h, plot_top, plot_h = 44.0, 10.0, 22.0, 30.0, 150.0
    height = plot_top + plot_h + (36 if spans else 22)
    plot_w = WIDTH - left - right
    n = max(len(labels), 1)
    slot = plot_w / n

    def x_at(i: int) -> float:
        return left + slot * (i + 0.5)

    def y_at(v: float) -> float:
        return plot_top + plot_h * (top - v) / (top - bottom)

    body = [_legend(prefix, series, "line", legend_h / 2 + 2)]
    grid = []
    tick = bottom
    while tick <= top + step / 2:
        y = y_at(tick)
        grid.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{WIDTH - right:.1f}" y2="{y:.1f}"'
            f' stroke="{"#555555" if tick == 0 else "#cccccc"}" stroke-width="{1 if tick == 0 else 0.6}"/>'
            f'<text x="{left - 4:.1f}" y="{y + 4:.1f}" text-anchor="end">{_number(tick)}</text>'
        )
        tick += step
    body.append(f'<g class="grid">{"".join(grid)}</g>')
    axis = []
    for i, text in enumerate(ticks):
        axis.append(
            f'<text x="{x_at(i):.1f}" y="{plot_top + plot_h + 15:.1f}" text-anchor="middle">'
            f"{escape(text)}</text>"
        )
    for text, first, last in spans:
        # Centred under its run of points, with a bracket line over the run when it has several.
        y = plot_top + plot_h + 30
        if last > first:
            axis.append(
                f'<path d="M{x_at(first) - 4:.1f} {y - 13:.1f} v3 H{x_at(last) + 4:.1f} v-3"'
                f' fill="none" stroke="#888888" stroke-width="0.8"/>'
            )
        axis.append(
            f'<text x="{(x_at(first) + x_at(last)) / 2:.1f}" y="{y:.1f}" text-anchor="middle"'
            f' font-size="{FONT - 1}">{escape(text)}</text>'
        )
    body.append(f'<g class="axis">{"".join(axis)}</g>')
    for index, s in enumerate(series):
        style = STYLES[index % len(STYLES)]
        points = [(x_at(i), y_at(v)) for i, v in enumerate(s.values)]
        dash = f' stroke-dasharray="{style["dash"]}"' if style["dash"] else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        marks = "".join(
            f"<g><title>{escape(labels[i])} · {escape(s.label)}: {_number(v)}</title>"
            f"{_marker(index, x, y)}</g>"
            for i, ((x, y), v) in enumerate(zip(points, s.values, strict=True))
        )
        body.append(
            f'<g class="series"><title>{escape(s.label)}</title>'
            f'<polyline points="{path}" fill="none" stroke="{style["colour"]}"'
            f' stroke-width="2"{dash}/>{marks}</g>'
        )
    desc = "; ".join(
        f"{label}: "
        + ", ".join(f"{s.label} {_number(s.values[i])}" for s in series if i < len(s.values))
        for i, label in enumerate(labels)
    )
    return _svg(prefix, height, title, desc, body)


def bar_chart(
    prefix: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    value_text: Callable[[int | float], str] = _number,
) -> Markup:
    """Return a horizontal bar chart: each label on its own line, its bars (one per series)
    beneath it with the value written at the end. Long names and many rows fit a phone."""
    values = [v for s in series for v in s.values] or [0]
    high = max(max(values), 0) or 1
    left, value_room = 4.0, 76.0
    bar_w_max = WIDTH - left - value_room
    bar_h, label_h, gap = 13.0, FONT + 5.0, 7.0
    legend_h = 22.0 if len(series) > 1 else 0.0
    row_h = label_h + bar_h * len(series) + 2 * (len(series) - 1) + gap
    height = legend_h + row_h * len(labels) + 4
    body = [_legend(prefix, series, "bar", legend_h / 2 + 2)] if legend_h else []
    y = legend_h
    for i, label in enumerate(labels):
        row = [f'<text x="{left:.1f}" y="{y + FONT:.1f}" font-weight="600">{escape(label)}</text>']
        bar_y = y + label_h
        for index, s in enumerate(series):
            value = s.values[i]
            width = max(bar_w_max * max(value, 0) / high, 0.0)
            shown = width if width >= 1 or value <= 0 else 1.0
            row.append(
                f"<g><title>{escape(label)} · {escape(s.label)}: {escape(value_text(value))}</title>"
                f'<rect x="{left:.1f}" y="{bar_y:.1f}" width="{shown:.1f}" height="{bar_h:g}"'
                f" {_fill(prefix, index)}/>"
                f'<text x="{left + shown + 4:.1f}" y="{bar_y + bar_h - 2:.1f}">'
                f"{escape(value_text(value))}</text></g>"
            )
            bar_y += bar_h + 2
        body.append(f'<g class="row">{"".join(row)}</g>')
        y += row_h
    desc = "; ".join(
        f"{label}: "
        + ", ".join(
            (f"{s.label} " if len(series) > 1 else "") + value_text(s.values[i]) for s in series
        )
        for i, label in enumerate(labels)
    )
    return _svg(prefix, height, title, desc, body)
