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
    """Equirectangular, scaled by cos(mean latitude) so distances look right at a region's scale.
    `width` × `height` is the drawing's size, fitted to the data's shape."""

    lon0: float
    lat1: float
    kx: float
    scale: float  # pixels per degree of latitude
    ox: float
    oy: float
    width: float
    height: float
    bounds: tuple[float, float, float, float]  # min lat, max lat, min lon, max lon

    def __call__(self, lat: float, lon: float) -> tuple[float, float]:
        x = self.ox + (lon - self.lon0) * self.kx * self.scale
        y = self.oy + (self.lat1 - lat) * self.scale
        return round(x, 1), round(y, 1)


def projection(coords: Iterable[tuple[float, float]], width: float = MAP_W, height: float = MAP_H) -> Projection:
    """Fit the points into at most `width` × `height`; the frame shrinks along the axis the data does
    not fill, so the drawing has the region's own shape."""
    pts = list(coords) or [(0.0, 0.0)]
    lats = [p[0] for p in pts]
    lons = [p[1] for p in pts]
    kx = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x = max((max(lons) - min(lons)) * kx, 1e-3)
    span_y = max(max(lats) - min(lats), 1e-3)
    scale = min((width - 2 * MAP_PAD) / span_x, (height - 2 * MAP_PAD) / span_y)
    # Never narrower than 0.9 × tall (nor flatter than 0.4): room for labels and a sensible frame.
    h = max(span_y * scale + 2 * MAP_PAD, width * 0.4)
    w = max(span_x * scale + 2 * MAP_PAD, h * 0.9)
    # Centre the drawing in the frame along the axis with room to spare.
    ox = (w - span_x * scale) / 2
    oy = (h - span_y * scale) / 2
    return Projection(
        lon0=min(lons),
        lat1=max(lats),
        kx=kx,
        scale=scale,
        ox=ox,
        oy=oy,
        width=round(w, 1),
        height=round(h, 1),
        bounds=(min(lats), max(lats), min(lons), max(lons)),
    )


NICE_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
KM_PER_DEGREE_LAT = 6371.0 * math.pi / 180


@dataclass(frozen=True)
class GridLine:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str


def graticule(proj: Projection, lines_wanted: int = 6) -> list[GridLine]:
    """Parallels and meridians at a round step, labelled in degrees: orientation without map tiles."""
    lat_min, lat_max, lon_min, lon_max = proj.bounds
    span = max(lat_max - lat_min, (lon_max - lon_min) * proj.kx, 1e-3)
    step = next((s for s in NICE_STEPS if span / s <= lines_wanted), NICE_STEPS[-1])
    out: list[GridLine] = []
    lat = math.floor(lat_min / step) * step
    while lat <= lat_max + step:
        _, y = proj(lat, lon_min)
        if 0 <= y <= proj.height:
            out.append(GridLine(0.0, y, proj.width, y, f"{abs(lat):.2f}°{'N' if lat >= 0 else 'S'}"))
        lat += step
    lon = math.floor(lon_min / step) * step
    while lon <= lon_max + step:
        x, _ = proj(lat_min, lon)
        if 0 <= x <= proj.width:
            out.append(GridLine(x, 0.0, x, proj.height, f"{abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"))
        lon += step
    return out


def scale_bar(proj: Projection, target_px: float = 120.0) -> tuple[float, str]:
    """A round distance and its length in pixels, about `target_px` long."""
    km_per_px = KM_PER_DEGREE_LAT / proj.scale
    raw = target_px * km_per_px
    nice = max((n * 10**e for e in range(-1, 5) for n in (1, 2, 5) if n * 10**e <= raw), default=raw)
    label = f"{nice:g} km"
    return round(nice / km_per_px, 1), label


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


def place_labels(
    points: Sequence[Point], *, char_px: float = 7.0, line_px: float = 15.0
) -> list[tuple[float, float, str]]:
    """Label positions right of each point, nudged down when a label would overlap one already placed
    (greedy, top to bottom): enough for a handful of depot names."""
    placed: list[tuple[float, float, float, str]] = []  # x, y, width, text
    for p in sorted(points, key=lambda q: (q.y, q.x)):
        x, y, width = p.x + 10, p.y + 4, len(p.name) * char_px
        while any(abs(y - oy) < line_px and x < ox + ow and ox < x + width for ox, oy, ow, _ in placed):
            y += line_px
        placed.append((x, y, width, p.name))
    return [(round(x, 1), round(y, 1), text) for x, y, _, text in placed]
