"""Feasible source→demand arcs (SPEC §3.2) as numpy arrays.

A source may serve a demand iff its item is the demanded SKU or one of that SKU's listed (direct)
substitutes and ``max(now, available_at) + distance_km / speed_kmh`` is no later than the demand's
``needed_by`` and the source's ``expires_at`` (each when given). Sources with quantity 0 give no arcs.

Arcs are ordered by demand index, then source index: deterministic, and each demand's arcs form one
contiguous slice ``demand_start[d]:demand_start[d + 1]``. Per arc only source, demand, distance and
an item-pair code are stored (memory: the largest scenarios have millions of arcs); penalty, unit
cost and the substitute flag are derived on first use and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

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


def unit_vectors(lat: npt.ArrayLike, lon: npt.ArrayLike) -> F64:
    """Points on the unit sphere, shape (n, 3)."""
    phi, lam = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def chord_distance_km(u: F64, v: F64) -> F64:
    """Great-circle km between every row of ``u`` (n, 3) and of ``v`` (m, 3) → (n, m).

    The same distance as ``haversine_km`` (2R·asin(chord/2) = 2R·asin(√a)), computed from coordinate
    differences — as well conditioned as haversine, with no trigonometry per pair.
    """
    sq = (u[:, None, 0] - v[None, :, 0]) ** 2
    sq += (u[:, None, 1] - v[None, :, 1]) ** 2
    sq += (u[:, None, 2] - v[None, :, 2]) ** 2
    np.sqrt(sq, out=sq)
    sq *= 0.5
    np.clip(sq, 0.0, 1.0, out=sq)
    return np.asarray(np.arcsin(sq, out=sq) * (2.0 * EARTH_RADIUS_KM), dtype=np.float64)


@dataclass(frozen=True)
class Arcs:
    """Feasible arcs; per-arc arrays share one index. See the module docstring for the order."""

    source: I32  # index into problem.sources
    demand: I32  # index into problem.demands
    distance_km: F64
    pair: I32  # demanded item index × n_items + source item index
    pair_penalty: F64  # per pair code: substitution penalty (0 for the demanded SKU itself)
    pair_substitute: B  # per pair code: the source's SKU differs from the demanded one
    cost_per_unit_km: float
    demand_start: I64  # CSR offsets, length n_demands + 1
    compatible: B  # per demand: some source with quantity > 0 holds a compatible SKU
    source_qty: I64  # per source: quantity (whole units)
    demand_qty: I64  # per demand: requested quantity

    @property
    def n(self) -> int:
        return int(self.source.shape[0])

    @cached_property
    def penalty(self) -> F64:
        """Per arc: substitution penalty per unit."""
        return np.asarray(self.pair_penalty[self.pair], dtype=np.float64)

    @cached_property
    def unit_cost(self) -> F64:
        """Per arc: distance_km × cost_per_unit_km + penalty."""
        return np.asarray(self.distance_km * self.cost_per_unit_km + self.penalty, dtype=np.float64)

    def unit_cost_at(self, idx: npt.ArrayLike) -> F64:
        """``unit_cost[idx]`` without materializing (and caching) the whole array."""
        i = np.asarray(idx)
        return np.asarray(self.distance_km[i] * self.cost_per_unit_km + self.pair_penalty[self.pair[i]], np.float64)

    @cached_property
    def substitute(self) -> B:
        """Per arc: True when the source's SKU is a substitute, not the demanded SKU."""
        return np.asarray(self.pair_substitute[self.pair], dtype=np.bool_)

    @cached_property
    def reachable(self) -> B:
        """Per demand: at least one feasible arc."""
        return np.asarray(np.diff(self.demand_start) > 0)


def _hours(t: datetime | None, now: datetime, default: float) -> float:
    return default if t is None else (t - now).total_seconds() / 3600.0


def build_arcs(problem: Problem) -> Arcs:
    """All feasible arcs of ``problem``, vectorized per demanded SKU (see module docstring)."""
    now, settings = problem.now, problem.settings
    srcs, dems = problem.sources, problem.demands
    n_s, n_d, n_i = len(srcs), len(dems), len(problem.items)
    sku_index = {it.sku: k for k, it in enumerate(problem.items)}

    s_item = np.fromiter((sku_index[s.item] for s in srcs), dtype=np.int64, count=n_s)
    s_qty = np.fromiter((s.quantity for s in srcs), dtype=np.int64, count=n_s)
    s_vec = unit_vectors([s.lat for s in srcs], [s.lon for s in srcs]).reshape(n_s, 3)
    s_ready = np.fromiter((max(0.0, _hours(s.available_at, now, 0.0)) for s in srcs), np.float64, n_s)
    s_expiry = np.fromiter((_hours(s.expires_at, now, np.inf) for s in srcs), np.float64, n_s)
    d_item = np.fromiter((sku_index[d.item] for d in dems), dtype=np.int64, count=n_d)
    d_deadline = np.fromiter((_hours(d.needed_by, now, np.inf) for d in dems), np.float64, n_d)
    d_qty = np.fromiter((d.quantity for d in dems), dtype=np.int64, count=n_d)
    # Demand lines often share a site: distances are computed once per (site, source).
    coords = np.array([(d.lat, d.lon) for d in dems], dtype=np.float64).reshape(n_d, 2)
    sites, d_site = np.unique(coords, axis=0, return_inverse=True)
    d_site = d_site.reshape(-1)
    site_vec = unit_vectors(sites[:, 0], sites[:, 1]).reshape(-1, 3)

    pair_penalty = np.zeros(n_i * n_i, dtype=np.float64)
    pair_substitute = np.zeros(n_i * n_i, dtype=np.bool_)
    compatible = np.zeros(n_d, dtype=np.bool_)
    parts: list[tuple[I64, I64, F64, I64]] = []  # demand, source, km, pair code
    speed = settings.speed_kmh
    for k, item in enumerate(problem.items):
        pen_of = {k: 0.0} | {sku_index[s.sku]: s.penalty for s in item.substitutes}
        for j, pen in pen_of.items():
            pair_penalty[k * n_i + j], pair_substitute[k * n_i + j] = pen, j != k
        rows = np.flatnonzero(d_item == k)
        cols = np.flatnonzero(np.isin(s_item, list(pen_of)) & (s_qty > 0))
        if rows.size == 0 or cols.size == 0:
            continue
        compatible[rows] = True
        used_sites, inv = np.unique(d_site[rows], return_inverse=True)
        inv = inv.reshape(-1)
        dist = chord_distance_km(site_vec[used_sites], s_vec[cols])  # per (site, source)
        arrival = dist / speed
        arrival += s_ready[cols][None, :]
        arrival[arrival > s_expiry[cols][None, :]] = np.nan  # too late for the lot: NaN ≤ x is False
        ok = arrival[inv] <= d_deadline[rows][:, None]  # per (line, source)
        del arrival
        r, c = np.nonzero(ok)
        parts.append((rows[r], cols[c], dist[inv[r], c], k * n_i + s_item[cols[c]]))
        del dist, ok

    counts = np.zeros(n_d, dtype=np.int64)
    for dem, *_ in parts:
        counts += np.bincount(dem, minlength=n_d)
    start = np.zeros(n_d + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    n = int(start[-1])
    source = np.empty(n, dtype=np.int32)
    dist_km = np.empty(n, dtype=np.float64)
    pair = np.empty(n, dtype=np.int32)
    for dem, src, km, code in parts:
        # A demand has one item, so all its arcs sit in one part, contiguous and source-ordered:
        # shift each run from its place in the part to its demand's start.
        run = np.flatnonzero(np.diff(dem, prepend=-1))  # first index of each demand's run
        shift = start[dem[run]] - run
        pos = np.arange(dem.size) + np.repeat(shift, np.diff(run, append=dem.size))
        source[pos], dist_km[pos], pair[pos] = src, km, code
    parts.clear()
    return Arcs(
        source=source,
        demand=np.repeat(np.arange(n_d, dtype=np.int32), counts),
        distance_km=dist_km,
        pair=pair,
        pair_penalty=pair_penalty,
        pair_substitute=pair_substitute,
        cost_per_unit_km=float(settings.cost_per_unit_km),
        demand_start=start,
        compatible=compatible,
        source_qty=s_qty,
        demand_qty=d_qty,
    )
