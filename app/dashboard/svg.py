"""Geometry for the server-rendered SVG: the map (sites and planned flows) and grouped bar charts.

No tiles and no chart library: a map of a coalition's region is a few dozen points and lines, and a
chart of three tiers is a dozen rectangles. Templates draw what these functions compute; colours
come from CSS classes (the page's Content-Security-Policy allows no inline styles or scripts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAP_W, MAP_H, MAP_PAD = 900.0, 600.0, 36.0


@dataclass(frozen=True)
class Point:
    id: int
    x: float
    y: float
    kind: str
    name: str
    detail: str


@dataclass(frozen=True)
class FlowLine:
    x1: float
    y1: float
    x2: float
    y2: float
    width: float
    quantity: int
    title: str


@dataclass(frozen=True)
class Projection:
    """Equirectangular, scaled by cos(mean latitude) so distances look right at a region's scale."""

    lon0: float
    lat1: float
    kx: float
    scale: float
    ox: float
    oy: float

    def __call__(self, lat: float, lon: float) -> tuple[float, float]:
        x = self.ox + (lon - self.lon0) * self.kx * self.scale
        y = self.oy + (self.lat1 - lat) * self.scale
        return round(x, 1), round(y, 1)


def projection(coords: Iterable[tuple[float, float]], width: float = MAP_W, height: float = MAP_H) -> Projection:
    pts = list(coords) or [(0.0, 0.0)]
    lats = [p[0] for p in pts]
    lons = [p[1] for p in pts]
    kx = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x = max((max(lons) - min(lons)) * kx, 1e-6)
    span_y = max(max(lats) - min(lats), 1e-6)
    scale = min((width - 2 * MAP_PAD) / span_x, (height - 2 * MAP_PAD) / span_y)
    # Centre the drawing in the frame along the axis with room to spare.
    ox = (width - span_x * scale) / 2
    oy = (height - span_y * scale) / 2
    return Projection(lon0=min(lons), lat1=max(lats), kx=kx, scale=scale, ox=ox, oy=oy)


def flow_width(quantity: int, largest: int) -> float:
    """1–9 px, by the square root of the quantity, so small flows stay visible next to big ones."""
    if largest <= 0:
        return 1.0
    return round(1.0 + 8.0 * math.sqrt(max(quantity, 0) / largest), 2)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    series: int
    value: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    bars: list[Bar]
    groups: list[tuple[float, str]]  # (x centre, label)
    ticks: list[tuple[float, str]]  # (y, label)
    base_y: float
    left: float
    right: float


def grouped_bars(
    groups: Sequence[tuple[str, Sequence[float | None]]],
    series: Sequence[str],
    *,
    width: float = 520.0,
    height: float = 240.0,
) -> Chart:
    """Bars for values in [0, 1] (fill rates), `len(series)` bars per group; None draws no bar."""
    left, right, top, bottom = 44.0, 12.0, 12.0, 30.0
    plot_w, plot_h = width - left - right, height - top - bottom
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.7 / max(len(series), 1)
    bars: list[Bar] = []
    centres: list[tuple[float, str]] = []
    for g, (label, values) in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.15
        centres.append((round(left + (g + 0.5) * group_w, 1), label))
        for s, value in enumerate(values):
            if value is None:
                continue
            v = min(max(float(value), 0.0), 1.0)
            h = plot_h * v
            bars.append(
                Bar(
                    x=round(x0 + s * bar_w, 1),
                    y=round(top + plot_h - h, 1),
                    w=round(bar_w - 2, 1),
                    h=round(h, 1),
                    series=s,
                    value=v,
                    title=f"{label} · {series[s]}: {v * 100:.0f}%",
                )
            )
    ticks = [(round(top + plot_h * (1 - t / 4), 1), f"{t * 25}%") for t in range(5)]
    return Chart(width, height, bars, centres, ticks, round(top + plot_h, 1), left, width - right)
