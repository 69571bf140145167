"""The dashboard's SVG geometry: the map projection, its scale bar and labels, the bar charts."""

from __future__ import annotations

import math

from app.dashboard import svg

# Kingston, Elmsford, Port Jervis (Hudson Valley demo sites).
KINGSTON, ELMSFORD, PORT_JERVIS = (41.927, -73.997), (41.055, -73.820), (41.375, -74.692)


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def test_projection_keeps_north_up_east_right_and_fits_the_frame() -> None:
    proj = svg.projection([KINGSTON, ELMSFORD, PORT_JERVIS])
    kx, ky = proj(*KINGSTON)
    ex, ey = proj(*ELMSFORD)
    px, py = proj(*PORT_JERVIS)
    assert ky < ey  # Kingston is north of Elmsford: higher on the page
    assert px < ex  # Port Jervis is west of Elmsford: further left
    for x, y in ((kx, ky), (ex, ey), (px, py)):
        assert svg.MAP_PAD - 0.5 <= y <= proj.height - svg.MAP_PAD + 0.5
        assert 0 <= x <= proj.width
    assert proj.width <= svg.MAP_W + 0.5 and proj.height <= svg.MAP_H + 0.5


def test_scale_bar_matches_great_circle_distances() -> None:
    proj = svg.projection([KINGSTON, ELMSFORD, PORT_JERVIS])
    bar_px, label = svg.scale_bar(proj)
    km_per_px = float(label.removesuffix(" km")) / bar_px
    (x1, y1), (x2, y2) = proj(*KINGSTON), proj(*ELMSFORD)
    drawn_km = math.hypot(x2 - x1, y2 - y1) * km_per_px
    assert abs(drawn_km - haversine_km(KINGSTON, ELMSFORD)) / haversine_km(KINGSTON, ELMSFORD) < 0.02


def test_single_site_and_empty_maps_do_not_divide_by_zero() -> None:
    for coords in ([], [KINGSTON]):
        proj = svg.projection(coords)
        assert proj.width > 0 and proj.height > 0
        assert svg.graticule(proj) is not None


def test_graticule_lines_are_labelled_in_degrees() -> None:
    lines = svg.graticule(svg.projection([KINGSTON, ELMSFORD, PORT_JERVIS]))
    labels = {g.label for g in lines}
    assert any(label.endswith("°N") for label in labels) and any(label.endswith("°W") for label in labels)


def test_overlapping_labels_are_moved_apart() -> None:
    a = svg.Point(1, 100.0, 100.0, "depot", "Stewart Field Regional Depot", "")
    b = svg.Point(2, 110.0, 102.0, "depot", "Fishkill Interchange Depot", "")
    (_, y1, _), (_, y2, _) = svg.place_labels([a, b])
    assert abs(y1 - y2) >= 15


def test_flow_width_grows_with_quantity() -> None:
    assert svg.flow_width(0, 100) == 1.0
    assert svg.flow_width(25, 100) < svg.flow_width(100, 100) == 9.0


def test_grouped_bars_scale_fill_rates_to_the_plot() -> None:
    chart = svg.grouped_bars([("critical", [1.0, 0.5]), ("high", [0.25, None])], ["plan", "greedy"])
    assert [b.series for b in chart.bars] == [0, 1, 0]  # None draws no bar
    full, half, quarter = chart.bars
    assert math.isclose(half.h * 2, full.h, rel_tol=0.01) and math.isclose(quarter.h * 4, full.h, rel_tol=0.01)
    assert all(math.isclose(b.y + b.h, chart.base_y, abs_tol=0.2) for b in chart.bars)  # bars stand on the axis
    assert full.title == "critical · plan: 100%"
