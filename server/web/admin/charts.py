"""Small SVG charts for the dashboard, drawn on the server: pictures with no script, no
external library, and nothing for the owner's content security policy to allow."""

from __future__ import annotations

import math

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 180
LEFT, BOTTOM, TOP = 40, 24, 12
COLOURS = ("#2f6f4e", "#d08a2e", "#5a6fb0", "#a3476b")


def _frame(body: str, label: str, height: int = HEIGHT) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
                  f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
                  f"{body}</svg>")


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1.0, 2.0, 5.0, 10.0) if step * magnitude >= value)


def _axis(top: float, plot_height: int) -> str:
    parts = []
    for fraction in (0, 0.5, 1):
        y = TOP + plot_height * (1 - fraction)
        value = top * fraction
        text = f"{value:,.0f}" if top >= 2 else f"{value:.1f}"
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{text}</text>')
    return "".join(parts)


def _day_labels(days: list[str], step: float) -> str:
    every = max(1, math.ceil(len(days) / 8))
    return "".join(
        f'<text class="tick" x="{LEFT + step * (index + 0.5):.1f}" y="{HEIGHT - 6}" '
        f'text-anchor="middle">{escape(day[5:])}</text>'
        for index, day in enumerate(days) if index % every == 0)


def bars(days: list[str], series: dict[str, list[float]], label: str) -> Markup:
    """Grouped bars per day, one colour per series, with a legend."""
    plot_height = HEIGHT - TOP - BOTTOM
    top = _nice_top(max((max(values, default=0) for values in series.values()), default=0))
    step = (WIDTH - LEFT) / max(1, len(days))
    width = step * 0.8 / max(1, len(series))
    parts = [_axis(top, plot_height)]
    for number, (name, values) in enumerate(series.items()):
        colour = COLOURS[number % len(COLOURS)]
        for index, value in enumerate(values):
            height = plot_height * value / top
            x = LEFT + step * index + step * 0.1 + width * number
            parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_height - height:.1f}" '
                         f'width="{width:.1f}" height="{height:.1f}" fill="{colour}">'
                         f"<title>{escape(days[index])}: {value:,.0f} {escape(name)}</title>"
                         "</rect>")
        parts.append(f'<rect x="{LEFT + 8 + 110 * number}" y="2" width="10" height="10" '
                     f'fill="{colour}"/><text class="legend" x="{LEFT + 22 + 110 * number}" '
                     f'y="11">{escape(name)}</text>')
    parts.append(_day_labels(days, step))
    return _frame("".join(parts), label)


def funnel(steps: list[tuple[str, float]], label: str) -> Markup:
    """Horizontal bars, widest first: how many are left at each step."""
    row = 26
    height = row * len(steps) + 8
    top = max((value for _name, value in steps), default=0) or 1.0
    label_width = 130
    parts = []
    for index, (name, value) in enumerate(steps):
        y = 4 + row * index
        width = (WIDTH - label_width - 60) * value / top
        parts.append(f'<text class="legend" x="{label_width - 8}" y="{y + 16}" '
                     f'text-anchor="end">{escape(name)}</text>'
                     f'<rect x="{label_width}" y="{y + 3}" width="{width:.1f}" height="18" '
                     f'fill="{COLOURS[index % 2]}"/>'
                     f'<text class="tick" x="{label_width + width + 6:.1f}" y="{y + 16}">'
                     f"{value:,.0f}</text>")
    return _frame("".join(parts), label, height)


def line(days: list[str], values: list[float], label: str) -> Markup:
    plot_height = HEIGHT - TOP - BOTTOM
    top = _nice_top(max(values, default=0))
    step = (WIDTH - LEFT) / max(1, len(days))
    points = " ".join(f"{LEFT + step * (index + 0.5):.1f},"
                      f"{TOP + plot_height * (1 - value / top):.1f}"
                      for index, value in enumerate(values))
    body = (_axis(top, plot_height) + f'<polyline points="{points}" fill="none" '
            f'stroke="{COLOURS[0]}" stroke-width="2"/>' + _day_labels(days, step))
    return _frame(body, label)


def interval(difference: float, low: float, high: float, label: str) -> Markup:
    """The lift and its 95% interval on an axis of conversion points, zero marked."""
    height = 56
    if not math.isfinite(low) or not math.isfinite(high):
        return _frame(f'<text class="legend" x="{WIDTH / 2}" y="30" text-anchor="middle">'
                      "no interval yet</text>", label, height)
    reach = _nice_top(max(abs(low), abs(high), 0.01) * 100) / 100

    def x(value: float) -> float:
        return LEFT + (WIDTH - 2 * LEFT) * (value + reach) / (2 * reach)

    body = (f'<line class="zero" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="6" y2="38"/>'
            f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="22" y2="22" '
            f'stroke="{COLOURS[0]}" stroke-width="3"/>'
            f'<circle cx="{x(difference):.1f}" cy="22" r="6" fill="{COLOURS[1]}"/>'
            f'<text class="tick" x="{x(-reach):.1f}" y="52">{-reach * 100:+.0f} pts</text>'
            f'<text class="tick" x="{x(0):.1f}" y="52" text-anchor="middle">0</text>'
            f'<text class="tick" x="{x(reach):.1f}" y="52" text-anchor="end">'
            f"{reach * 100:+.0f} pts</text>")
    return _frame(body, label, height)
