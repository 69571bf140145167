"""Feasible source→demand arcs (SPEC §3.2) as numpy arrays.

A source may serve a demand iff its item is the demanded SKU or one of that SKU's listed (direct)
substitutes and ``max(now, available_at) + distance_km / speed_kmh`` is no later than the demand's
``needed_by`` and the source's ``expires_at`` (each when given). Sources with quantity 0 give no arcs.

Arcs are ordered by demand index, then source index: deterministic, and each demand's arcs form one
contiguous slice ``demand_start[d]:demand_start[d + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from optimizer.model import EARTH_RADIUS_KM, Problem

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


def haversine_km(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike) -> F64:
    """Great-circle distance in km on a sphere of radius 6,371 km; broadcasts like numpy."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(np.asarray(lat2, dtype=np.float64))
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2, dtype=np.float64)) - np.radians(np.asarray(lon1, dtype=np.float64))
    a = np.sin(dlat * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon * 0.5) ** 2
    # clip: rounding can push a past 1 for antipodal points, and arcsin would return NaN.
    return np.asarray(2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64)


@dataclass(frozen=True)
class Arcs:
    """Feasible arcs; per-arc arrays share one index. See the module docstring for the order."""

    source: I32  # index into problem.sources
    demand: I32  # index into problem.demands
    distance_km: F64
    penalty: F64  # substitution penalty per unit (0 for the demanded SKU itself)
    unit_cost: F64  # distance_km × cost_per_unit_km + penalty
    substitute: B  # True when the source's SKU is a substitute, not the demanded SKU
    demand_start: I64  # CSR offsets, length n_demands + 1
    compatible: B  # per demand: some source with quantity > 0 holds a compatible SKU
    source_qty: I64  # per source: quantity (whole units)
    demand_qty: I64  # per demand: requested quantity

    @property
    def n(self) -> int:
        return int(self.source.shape[0])

    @property
    def reachable(self) -> B:
        """Per demand: at least one feasible arc."""
        return np.asarray(np.diff(self.demand_start) > 0)


def _hours(t: datetime | None, now: datetime, default: float) -> float:
    return default if t is None else (t - now).total_seconds() / 3600.0


def build_arcs(problem: Problem) -> Arcs:
    """All feasible arcs of ``problem``, vectorized per demanded SKU (see module docstring)."""
    now, settings = problem.now, problem.settings
    srcs, dems = problem.sources, problem.demands
    n_s, n_d = len(srcs), len(dems)
    sku_index = {it.sku: k for k, it in enumerate(problem.items)}

    s_item = np.fromiter((sku_index[s.item] for s in srcs), dtype=np.int32, count=n_s)
    s_qty = np.fromiter((s.quantity for s in srcs), dtype=np.int64, count=n_s)
    s_lat = np.fromiter((s.lat for s in srcs), dtype=np.float64, count=n_s)
    s_lon = np.fromiter((s.lon for s in srcs), dtype=np.float64, count=n_s)
    s_ready = np.fromiter((max(0.0, _hours(s.available_at, now, 0.0)) for s in srcs), np.float64, n_s)
    s_expiry = np.fromiter((_hours(s.expires_at, now, np.inf) for s in srcs), np.float64, n_s)
    d_item = np.fromiter((sku_index[d.item] for d in dems), dtype=np.int32, count=n_d)
    d_lat = np.fromiter((d.lat for d in dems), dtype=np.float64, count=n_d)
    d_lon = np.fromiter((d.lon for d in dems), dtype=np.float64, count=n_d)
    d_deadline = np.fromiter((_hours(d.needed_by, now, np.inf) for d in dems), np.float64, n_d)
    d_qty = np.fromiter((d.quantity for d in dems), dtype=np.int64, count=n_d)

    compatible = np.zeros(n_d, dtype=np.bool_)
    parts: list[tuple[I32, I32, F64, F64, B]] = []  # demand, source, km, penalty, substitute
    speed, cpk = settings.speed_kmh, settings.cost_per_unit_km
    for k, item in enumerate(problem.items):
        rows = np.flatnonzero(d_item == k).astype(np.int32)
        if rows.size == 0:
            continue
        penalty_of = {k: 0.0} | {sku_index[s.sku]: s.penalty for s in item.substitutes}
        cols = np.flatnonzero(np.isin(s_item, list(penalty_of)) & (s_qty > 0)).astype(np.int32)
        if cols.size == 0:
            continue
        compatible[rows] = True
        pen = np.array([penalty_of[int(i)] for i in s_item[cols]], dtype=np.float64)
        # Demand lines often share a site: compute distances once per distinct (lat, lon).
        coords = np.stack([d_lat[rows], d_lon[rows]], axis=1)
        uniq, inv = np.unique(coords, axis=0, return_inverse=True)
        dist_u = haversine_km(uniq[:, 0:1], uniq[:, 1:2], s_lat[cols][None, :], s_lon[cols][None, :])
        dist = dist_u[inv.reshape(-1)]
        arrival = s_ready[cols][None, :] + dist / speed
        limit = np.minimum(d_deadline[rows][:, None], s_expiry[cols][None, :])
        r, c = np.nonzero(arrival <= limit)
        parts.append((rows[r], cols[c], dist[r, c], pen[c], (s_item[cols] != k)[c]))

    if parts:
        dem = np.concatenate([p[0] for p in parts])
        # Each part is already (demand, source)-ordered; a stable sort on demand merges them.
        order = np.argsort(dem, kind="stable")
        dem = dem[order]
        src, dist_km, pen_a, sub = (np.concatenate([p[i] for p in parts])[order] for i in (1, 2, 3, 4))
    else:
        dem = src = np.zeros(0, dtype=np.int32)
        dist_km = pen_a = np.zeros(0, dtype=np.float64)
        sub = np.zeros(0, dtype=np.bool_)
    start = np.searchsorted(dem, np.arange(n_d + 1), side="left").astype(np.int64)
    return Arcs(
        source=np.ascontiguousarray(src, dtype=np.int32),
        demand=np.ascontiguousarray(dem, dtype=np.int32),
        distance_km=np.ascontiguousarray(dist_km, dtype=np.float64),
        penalty=np.ascontiguousarray(pen_a, dtype=np.float64),
        unit_cost=np.ascontiguousarray(dist_km * cpk + pen_a, dtype=np.float64),
        substitute=np.ascontiguousarray(sub, dtype=np.bool_),
        demand_start=start,
        compatible=compatible,
        source_qty=s_qty,
        demand_qty=d_qty,
    )
