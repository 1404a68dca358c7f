"""Line charts as inline SVG, rendered on the server.

No JavaScript charting library and nothing fetched from a CDN: the page works offline,
and the refresh endpoint sends the same SVG the first render did.
"""

from __future__ import annotations

import dataclasses
import math
from html import escape

WIDTH, HEIGHT = 460, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 32
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")
NO_DATA = "no data yet"


@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[int, float]]  # (round, value)


@dataclasses.dataclass(frozen=True)
class Reference:
    """A horizontal line, e.g. the target epsilon."""

    name: str
    value: float


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_chart(
    title: str,
    series: list[Series],
    *,
    reference: Reference | None = None,
    y_min: float | None = None,
    y_max: float | None = None,
    empty: str = NO_DATA,
) -> str:
    """An SVG line chart of per-round series; the `empty` note when there is nothing to draw."""
    drawn = [s for s in series if s.points]
    head = (
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f'<text class="chart-title" x="{LEFT}" y="16">{escape(title)}</text>'
    )
    if not drawn:
        note = f'<text class="empty" x="{LEFT}" y="{HEIGHT / 2}">{escape(empty)}</text>'
        return head + note + "</svg>"
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points] + ([reference.value] if reference else [])
    x_low, x_high = min(xs), max(max(xs), min(xs) + 1)
    y_low = min(ys) if y_min is None else min(y_min, min(ys))
    y_high = max(ys) if y_max is None else max(y_max, max(ys))
    if y_high - y_low < 1e-12:  # a flat line: keep a floor the caller gave
        y_low, y_high = (y_low, y_low + 1) if y_min is not None else (y_low - 0.5, y_high + 0.5)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    parts = [head]
    for tick in _ticks(y_low, y_high):
        y = py(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_label(tick)}</text>"
        )
    for tick in _ticks(x_low, x_high, count=min(8, int(x_high - x_low))):
        if tick != int(tick):
            continue
        x = px(tick)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">'
            f"{int(tick)}</text>"
        )
    parts.append(
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end">round</text>'
    )
    if reference is not None:
        y = py(reference.value)
        parts.append(
            f'<line class="reference" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/><text class="reference-label" x="{WIDTH - RIGHT}" '
            f'y="{y - 4:.1f}" text-anchor="end">{escape(reference.name)} '
            f"{_label(reference.value)}</text>"
        )
    legend_x = WIDTH - RIGHT
    for i, s in enumerate(drawn):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        parts.append(
            f'<polyline class="series" data-series="{escape(s.name)}" '
            f'data-points="{len(s.points)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{coords}"/>'
        )
        parts += [
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}">'
            f"<title>{escape(s.name)} round {x}: {_label(y)}</title></circle>"
            for x, y in s.points
        ]
        last_y = s.points[-1][1]
        parts.append(
            f'<text class="legend" x="{legend_x}" y="16" fill="{colour}" '
            f'text-anchor="end">{escape(s.name)} {_label(last_y)}</text>'
        )
        legend_x -= 8 * (len(s.name) + len(_label(last_y))) + 16
    parts.append("</svg>")
    return "".join(parts)
