"""Charts drawn on the server as SVG: no charting library, no script, no build step, and the
page works offline. Every mark is a ``<rect class="mark">`` with a ``<title>`` (the tooltip)
carrying the figure as ``dashboard_format`` writes it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

# Okabe-Ito: told apart with every common colour blindness, and in print.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#999999",
)
WIDE, HALF = 1140, 540  # a chart across the page, or in one of two columns, drawn 1:1
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 24, 40


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]  # one per category; 0 for none
    labels: Sequence[str]  # the tooltip figure of each value
    color: str


def nice_step(top: float, ticks: int = 4) -> float:
    """A round step (1, 2 or 5 × 10^k) giving about ``ticks`` gridlines up to ``top``."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def tick(value: float) -> str:
    """An axis label: short, never a figure of the report (those are in the tooltips)."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.6g}"


def _svg(body: list[str], name: str, width: int, height: int = HEIGHT) -> Markup:
    head = (
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(name)}" xmlns="http://www.w3.org/2000/svg">'
    )
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704  # every text part is escaped


def _empty(name: str, width: int, message: str = "No data in this period") -> Markup:
    return _svg(
        [
            f'<text x="{width / 2}" y="60" text-anchor="middle" class="empty">'
            f"{escape(message)}</text>"
        ],
        name,
        width,
        100,
    )


def _axis(top: float, unit: str, width: int) -> tuple[list[str], float]:
    step = nice_step(top)
    ceiling = step * math.ceil(top / step) if top > 0 else step
    inner = HEIGHT - TOP - BOTTOM
    parts = []
    value = 0.0
    while value <= ceiling + step / 1000:
        y = TOP + inner - inner * value / ceiling
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(tick(value))}</text>"
        )
        value += step
    parts.append(f'<text class="unit" x="4" y="{TOP - 10}">{escape(unit)}</text>')
    return parts, ceiling


def bars(
    name: str,
    categories: Sequence[str],
    series: Sequence[Series],
    unit: str,
    *,
    stacked: bool = True,
    width: int = WIDE,
) -> Markup:
    """Vertical bars per category, the series stacked (or side by side), with a legend."""
    if not categories or not any(v for s in series for v in s.values):
        return _empty(name, width)
    totals = [
        sum(max(s.values[i], 0) for s in series)
        if stacked
        else max(max(s.values[i], 0) for s in series)
        for i in range(len(categories))
    ]
    parts, ceiling = _axis(max(totals), unit, width)
    inner_w, inner_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / len(categories)
    bar_w = max(slot * 0.72, 1.0)
    every = max(1, math.ceil(len(categories) / (width // 60)))
    for i, category in enumerate(categories):
        x0 = LEFT + i * slot + (slot - bar_w) / 2
        base = 0.0
        for j, s in enumerate(series):
            value = max(s.values[i], 0)
            if not value:
                continue
            h = inner_h * value / ceiling
            w = bar_w if stacked else bar_w / len(series)
            x = x0 if stacked else x0 + j * w
            y = TOP + inner_h - inner_h * (base + value) / ceiling if stacked else TOP + inner_h - h
            parts.append(
                f'<rect class="mark" data-series="{escape(s.name)}" '
                f'data-category="{escape(category)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{max(w - 0.5, 0.5):.1f}" height="{max(h, 0.5):.1f}" fill="{s.color}">'
                f"<title>{escape(category)} · {escape(s.name)}: {escape(s.labels[i])}</title>"
                "</rect>"
            )
            if stacked:
                base += value
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{LEFT + i * slot + slot / 2:.1f}" '
                f'y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(category)}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{width - RIGHT}" y1="{TOP + inner_h}" '
        f'y2="{TOP + inner_h}"/>'
    )
    parts += _legend(series)
    return _svg(parts, name, width)


def _legend(series: Sequence[Series]) -> list[str]:
    """A key per series that has a value, along the bottom."""
    parts, x = [], float(LEFT)
    for s in series:
        if not any(s.values):
            continue
        parts.append(
            f'<rect class="key" x="{x:.1f}" y="{HEIGHT - 14}" width="10" height="10" '
            f'fill="{s.color}"/><text class="legend" x="{x + 14:.1f}" y="{HEIGHT - 5}">'
            f"{escape(s.name)}</text>"
        )
        x += 24 + 7.2 * len(s.name)
    return parts


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # the bar's length; negative for a fall (``diverging``)
    text: str  # the figure printed beside the bar
    href: str | None = None
    tip: str | None = None  # the tooltip, when it says more than ``text``


def hbars(
    name: str,
    rows: Sequence[Bar],
    *,
    top: float | None = None,
    diverging: bool = False,
    width: int = HALF,
    empty: str = "No data in this period",
) -> Markup:
    """Horizontal bars, one per row, the figure beside each: rankings, utilisation, budgets.
    ``diverging`` centres zero (a rise red to the right, a fall green to the left)."""
    if not rows:
        return _empty(name, width, empty)
    row_h, label_w, text_w = 26, 130, 190
    height = 8 + row_h * len(rows) + 8
    span = top or max((abs(r.value) for r in rows), default=0) or 1.0
    inner = width - label_w - text_w
    zero = label_w + (inner / 2 if diverging else 0)
    scale = (inner / 2 if diverging else inner) / span
    parts = []
    for i, r in enumerate(rows):
        y = 8 + i * row_h
        length = min(abs(r.value), span) * scale
        x = zero - length if diverging and r.value < 0 else zero
        color = PALETTE[0]
        if diverging:
            color = "#C0392B" if r.value > 0 else "#1E8449"
        label = escape(r.label)
        if r.href:
            label = f'<a href="{escape(r.href)}">{label}</a>'
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
            f"{label}</text>"
            f'<rect class="track" x="{label_w}" y="{y + 5}" width="{inner}" height="14"/>'
            f'<rect class="mark" data-series="{escape(name)}" data-category="{escape(r.label)}" '
            f'x="{x:.1f}" y="{y + 5}" width="{max(length, 1.0):.1f}" height="14" fill="{color}">'
            f"<title>{escape(r.label)}: {escape(r.tip or r.text)}</title></rect>"
            f'<text class="figure" x="{label_w + inner + 8}" y="{y + 17}">'
            f"{escape(r.text)}</text>"
        )
    if diverging:
        parts.append(f'<line class="axis" x1="{zero}" x2="{zero}" y1="{TOP}" y2="{height - 8}"/>')
    return _svg(parts, name, width, height)
