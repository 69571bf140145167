"""Seeded synthetic allocation scenarios, written as Problem JSON v1 (SPEC §3.1).

Sizes (demand sites / demand lines / sources):

* ``small``  —   300 /  ~1,700 /   90
* ``state``  — 3,000 / ~17,000 /  900 — a region about the size of a large US state (≈ 1,000 × 600 km),
  so that at 50 km/h a 12-hour deadline cannot be met from the far side; ≥ 1.5 M feasible arcs.
* ``stress`` — 3 × state's demand (9,000 sites, ~51,000 lines) over the same 900 sources (with 3 × the
  stock), i.e. about 3 × the arcs: the solver is meant to scale with arcs, so that is what grows.

Every scenario uses the 12-item catalog of ``/work/shared/examples/problem-small.json`` (with its
substitution links), deadlines from 12 h to 7 days, total supply ≈ 70 % of total demand (per item
between roughly 35 % and 120 %, so some items are scarce and some abundant), a few lots that expire
within two days and some confirmed pledges that only become available later.

Usage: ``python benchmarks/generate.py state -o state.json [--seed 7]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

# (sku, substitutes as (sku, penalty), share of demand lines, share of supply units / demand units)
CATALOG: tuple[tuple[str, tuple[tuple[str, float], ...], float, float], ...] = (
    ("N95", (("KN95", 0.3), ("ELASTOMERIC", 0.1)), 0.16, 0.45),
    ("KN95", (("N95", 0.05),), 0.08, 0.9),
    ("ELASTOMERIC", (), 0.03, 1.2),
    ("SURGICAL_MASK", (("KN95", 0.2),), 0.14, 0.6),
    ("CLOTH_MASK", (("SURGICAL_MASK", 0.05),), 0.06, 1.1),
    ("GLOVES_NITRILE", (), 0.14, 0.65),
    ("GOWN_ISOLATION", (), 0.08, 0.35),
    ("FACE_SHIELD", (), 0.05, 1.0),
    ("HAND_SANITIZER", (), 0.08, 0.8),
    ("DISINFECTANT_WIPES", (), 0.06, 0.75),
    ("FOOD_BOX", (), 0.05, 0.55),
    ("WATER_CASE", (), 0.07, 0.9),
)
TARGET_COVERAGE = 0.70

# Region: about 1,000 × 600 km (Pennsylvania to Kentucky), a large US state in extent.
LAT_RANGE = (36.0, 41.5)
LON_RANGE = (-86.0, -74.5)
DEADLINE_HOURS = np.array([12, 24, 36, 48, 72, 120, 168], dtype=np.float64)
DEADLINE_P = np.array([0.12, 0.2, 0.12, 0.18, 0.16, 0.1, 0.12])
PRIORITY_NAMES = ("critical", "high", "routine")
PRIORITY_P = np.array([0.15, 0.3, 0.55])


@dataclass(frozen=True)
class Size:
    sites: int
    lines_per_site: float
    sources: int


SIZES: dict[str, Size] = {
    "small": Size(sites=300, lines_per_site=5.7, sources=90),
    "state": Size(sites=3000, lines_per_site=5.7, sources=900),
    "stress": Size(sites=9000, lines_per_site=5.7, sources=900),
}


def _iso(hours: float) -> str:
    return (NOW + timedelta(hours=float(hours))).strftime("%Y-%m-%dT%H:%M:%SZ")


def _places(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float) -> np.ndarray:
    """Points clustered around population centres (70 %) or uniform over the region (30 %)."""
    pick = rng.integers(0, len(centres), size=n)
    clustered = centres[pick] + rng.normal(0.0, spread, size=(n, 2)) * np.array([1.0, 1.3])
    uniform = np.column_stack([rng.uniform(*LAT_RANGE, size=n), rng.uniform(*LON_RANGE, size=n)])
    pts = np.where(rng.random(n)[:, None] < 0.7, clustered, uniform)
    pts[:, 0] = np.clip(pts[:, 0], *LAT_RANGE)
    pts[:, 1] = np.clip(pts[:, 1], *LON_RANGE)
    return np.asarray(pts)


def generate(size: str, seed: int = 7) -> dict[str, Any]:
    """Problem JSON v1 for one of ``SIZES``; same (size, seed) → same document."""
    spec = SIZES[size]
    rng = np.random.default_rng([seed, list(SIZES).index(size)])
    skus = [c[0] for c in CATALOG]
    line_p = np.array([c[2] for c in CATALOG])
    line_p = line_p / line_p.sum()
    centres = np.column_stack([rng.uniform(*LAT_RANGE, size=14), rng.uniform(*LON_RANGE, size=14)])

    # Demand sites: a requester organisation each, with an equity weight (most 1.0, vulnerable > 1).
    site_xy = _places(rng, spec.sites, centres, 0.35)
    site_w = np.round(np.where(rng.random(spec.sites) < 0.7, 1.0, rng.uniform(0.5, 3.0, spec.sites)), 2)
    n_lines = np.clip(rng.poisson(spec.lines_per_site - 1, size=spec.sites) + 1, 1, len(skus))
    demands: list[dict[str, Any]] = []
    demand_units = np.zeros(len(skus))
    for s in range(spec.sites):
        items = rng.choice(len(skus), size=int(n_lines[s]), replace=False, p=line_p)
        qty = np.maximum(1, np.round(rng.lognormal(5.5, 1.0, size=len(items)))).astype(np.int64)
        prio = rng.choice(3, size=len(items), p=PRIORITY_P)
        due = rng.choice(DEADLINE_HOURS, size=len(items), p=DEADLINE_P)
        no_deadline = rng.random(len(items)) < 0.05
        for k, i in enumerate(items):
            demand_units[i] += qty[k]
            d: dict[str, Any] = {
                "id": f"R{len(demands)}",
                "requester": f"org-{s}",
                "item": skus[i],
                "quantity": int(qty[k]),
                "priority": PRIORITY_NAMES[prio[k]],
                "lat": round(float(site_xy[s, 0]), 5),
                "lon": round(float(site_xy[s, 1]), 5),
                "equity_weight": float(site_w[s]),
            }
            if not no_deadline[k]:
                d["needed_by"] = _iso(due[k])
            demands.append(d)

    # Supply per item: its ratio of that item's demand, rescaled so the total is TARGET_COVERAGE.
    ratio = np.array([c[3] for c in CATALOG])
    supply_units = ratio * demand_units
    supply_units *= TARGET_COVERAGE * demand_units.sum() / supply_units.sum()
    src_item = rng.choice(len(skus), size=spec.sources, p=line_p)
    for i in range(len(skus)):  # every item has at least one lot
        if not (src_item == i).any():
            src_item[rng.integers(0, spec.sources)] = i
    depot_xy = _places(rng, spec.sources, centres, 0.25)
    sources: list[dict[str, Any]] = []
    for i in range(len(skus)):
        idx = np.flatnonzero(src_item == i)
        share = rng.dirichlet(np.full(len(idx), 2.0))
        qty = np.floor(share * supply_units[i]).astype(np.int64)
        for k, j in enumerate(idx):
            src: dict[str, Any] = {
                "id": f"L{j}",
                "item": skus[i],
                "quantity": int(qty[k]),
                "lat": round(float(depot_xy[j, 0]), 5),
                "lon": round(float(depot_xy[j, 1]), 5),
            }
            u = rng.random()
            if u < 0.12:  # a confirmed pledge, available later
                src["available_at"] = _iso(float(rng.choice([6.0, 12.0, 24.0, 48.0])))
            else:
                src["available_at"] = _iso(0.0)
                if u > 0.95:  # a lot close to expiry
                    src["expires_at"] = _iso(float(rng.uniform(4.0, 48.0)))
            sources.append(src)
    sources.sort(key=lambda s: int(s["id"][1:]))

    return {
        "version": 1,
        "now": _iso(0.0),
        "settings": {"speed_kmh": 50.0, "cost_per_unit_km": 0.01, "time_limit_s": 600},
        "items": [
            {"sku": sku, "substitutes": [{"sku": s, "penalty": p} for s, p in subs]}
            for sku, subs, _, _ in CATALOG
        ],
        "sources": sources,
        "demands": demands,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("size", choices=sorted(SIZES))
    ap.add_argument("-o", "--output", default="-")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    doc = generate(args.size, args.seed)
    if args.output == "-":
        json.dump(doc, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(doc, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
