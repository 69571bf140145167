"""Independent verification of a Plan against its Problem (SPEC §3.2–§3.4).

Deliberately shares no code with the solver (``network``, ``fairness``, ``routing``, ``explain``): it
recomputes distances with its own great-circle formula, its own feasible arcs, reasons and KPIs, and
proves SPEC §3.3's whole-unit certificate with its own search. Three groups of checks:

1. **Feasibility** — every allocation names an existing source and demand, ships the source's SKU,
   which is the demanded SKU or a listed substitute, on an arc that arrives in time (SPEC §3.2); the
   quantity is a non-negative integer; no source gives, and no demand gets, more than it has/asked.
2. **Consistency** — each demand is reported once with allocated/fill/unmet matching the allocations,
   reason null iff unmet = 0 and otherwise the first SPEC §3.4 reason that applies; each allocation's
   distance and cost; the KPIs recomputed (small relative tolerance).
3. **Certificate** (SPEC §3.3) — for a demand r with x_r < q_r, is there a feasible plan where r gets
   x_r + 1, every *protected* demand (higher tier, or same tier with x_s/(w_s q_s) ≤ (x_r+1)/(w_r q_r))
   keeps ≥ x_s, and the others may get anything? That is a flow problem with lower bounds on the
   demand→sink arcs only. A flow meeting the lower bounds can always be thinned to meet them exactly
   (cut flow back along its paths), so it is the max-flow question "S→source (its stock) → demand
   (feasible arcs, ∞) → T (cap L_s = x_s if protected, x_r + 1 for r, 0 otherwise): is the max flow
   ΣL?" Unprotected demands have cap 0, i.e. they drop out and free their units.
   The plan's own flow, minus what went to unprotected demands, is a feasible flow of value ΣL − 1 in
   that network. By the augmenting-path theorem the max flow is ΣL iff its residual network has a path
   S → source → demand → … → r → T; the only residual sink arc is r's. Such a path alternates
   "source i serves demand j (any feasible arc)" and "demand j gives back a unit it gets from source i'
   (f_i'j > 0, j protected)", and starts at a source with spare stock. ``_residual_search`` finds it
   with one breadth-first search from r backwards (numpy, frontier at a time). ``method="maxflow"``
   instead solves the max-flow from scratch with OR-Tools ``SimpleMaxFlow`` (used by the tests to
   cross-check the two formulations). A stranded-supply pass first checks *every* unfilled demand
   against sources with stock left over after the whole plan (a violation for any r).

Tolerances: arrival times within ``TIME_TOL_H`` of a limit are accepted for allocations; the
certificate only trusts arcs that are feasible in exact arithmetic, so float noise can never invent an
improvement the solver could not see. Level comparisons treat values within ``LEVEL_RTOL`` as ties
(ties are protected, again in the plan's favour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from ortools.graph.python import max_flow

from optimizer.model import PRIORITIES, Plan, Problem

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

TIME_TOL_H = 1e-6  # 3.6 ms: float noise between two correct computations of an arrival time
LEVEL_RTOL = 1e-12
NUM_RTOL = 1e-6  # reported floats (distance, cost, KPIs) against recomputed ones
_R_KM = 6371.0
_MAX_PER_KIND = 20


@dataclass(frozen=True, slots=True)
class CheckReport:
    ok: bool
    errors: tuple[str, ...]
    allocations_checked: int = 0
    demands_checked: int = 0
    certificate_candidates: int = 0  # reachable demands below full fill
    certificate_checked: int = 0  # of those, how many the certificate search examined
    certificate_complete: bool = False  # every candidate examined (no sampling, not skipped)
    stranded_checked: int = 0  # unfilled demands checked against left-over stock


class _Errors:
    """Error messages capped per kind, so a badly broken plan gives a readable report."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n <= _MAX_PER_KIND:
            self.items.append(f"{kind}: {message}")

    def __bool__(self) -> bool:
        return bool(self.counts)

    def final(self) -> tuple[str, ...]:
        more = [f"{k}: … and {n - _MAX_PER_KIND} more" for k, n in self.counts.items() if n > _MAX_PER_KIND]
        return tuple(self.items + more)


def great_circle_km(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike) -> F64:
    """Haversine distance (radius 6,371 km), written with atan2 — independent of ``network``."""
    rad = math.pi / 180.0
    a1, a2 = np.asarray(lat1, np.float64) * rad, np.asarray(lat2, np.float64) * rad
    dlat = a2 - a1
    dlon = (np.asarray(lon2, np.float64) - np.asarray(lon1, np.float64)) * rad
    h = np.sin(dlat / 2) ** 2 + np.cos(a1) * np.cos(a2) * np.sin(dlon / 2) ** 2
    h = np.clip(h, 0.0, 1.0)
    return np.asarray(2.0 * _R_KM * np.arctan2(np.sqrt(h), np.sqrt(1.0 - h)), dtype=np.float64)


def _hours(t: datetime | None, now: datetime, none: float) -> float:
    return none if t is None else (t - now).total_seconds() / 3600.0


class _World:
    """Per-problem arrays: times, positions, compatibility, and all exactly feasible arcs."""

    def __init__(self, problem: Problem) -> None:
        p = problem
        self.src_index = {s.id: i for i, s in enumerate(p.sources)}
        self.dem_index = {d.id: j for j, d in enumerate(p.demands)}
        self.cap = np.array([s.quantity for s in p.sources], dtype=np.int64)
        self.q = np.array([d.quantity for d in p.demands], dtype=np.int64)
        self.w = np.array([d.equity_weight for d in p.demands], dtype=np.float64)
        rank = {name: k for k, name in enumerate(PRIORITIES)}
        self.tier = np.array([rank[d.priority] for d in p.demands], dtype=np.int64)
        self.s_lat = np.array([s.lat for s in p.sources], dtype=np.float64)
        self.s_lon = np.array([s.lon for s in p.sources], dtype=np.float64)
        self.d_lat = np.array([d.lat for d in p.demands], dtype=np.float64)
        self.d_lon = np.array([d.lon for d in p.demands], dtype=np.float64)
        # Departure (never before now), expiry and deadline in hours after now.
        self.ready = np.array([max(0.0, _hours(s.available_at, p.now, 0.0)) for s in p.sources], np.float64)
        self.expiry = np.array([_hours(s.expires_at, p.now, math.inf) for s in p.sources], np.float64)
        self.deadline = np.array([_hours(d.needed_by, p.now, math.inf) for d in p.demands], np.float64)
        self.speed = p.settings.speed_kmh
        self.cpk = p.settings.cost_per_unit_km
        # penalty[demanded sku][source sku]; absent = incompatible.
        self.penalty = {it.sku: {it.sku: 0.0} | {s.sku: s.penalty for s in it.substitutes} for it in p.items}
        s_item = [s.item for s in p.sources]
        self.compatible = np.array(
            [any(s_item[i] in self.penalty[d.item] and self.cap[i] > 0 for i in range(len(s_item)))
             for d in p.demands] if len(p.sources) < 64 else self._compatible_bulk(p), dtype=np.bool_,
        ).reshape(-1)
        self.arc_src, self.arc_dem = self._feasible_arcs(p)
        order = np.lexsort((self.arc_src, self.arc_dem))
        self.arc_src, self.arc_dem = self.arc_src[order], self.arc_dem[order]
        self.dem_ptr = np.searchsorted(self.arc_dem, np.arange(len(p.demands) + 1)).astype(np.int64)

    def _compatible_bulk(self, p: Problem) -> list[bool]:
        stocked = {s.item for s in p.sources if s.quantity > 0}
        return [any(sku in stocked for sku in self.penalty[d.item]) for d in p.demands]

    def slack(self, s: I64, d: I64) -> F64:
        """Hours to spare on arcs s[k] → d[k] (negative = late or expired)."""
        km = great_circle_km(self.s_lat[s], self.s_lon[s], self.d_lat[d], self.d_lon[d])
        arrival = self.ready[s] + km / self.speed
        return np.asarray(np.minimum(self.deadline[d], self.expiry[s]) - arrival, dtype=np.float64)

    def _feasible_arcs(self, p: Problem) -> tuple[I64, I64]:
        by_item: dict[str, list[int]] = {}
        for j, d in enumerate(p.demands):
            by_item.setdefault(d.item, []).append(j)
        s_item = np.array([s.item for s in p.sources], dtype=object)
        src_out: list[I64] = [np.zeros(0, np.int64)]
        dem_out: list[I64] = [np.zeros(0, np.int64)]
        for sku, rows_list in by_item.items():
            cols = np.flatnonzero(np.isin(s_item, list(self.penalty[sku])) & (self.cap > 0)).astype(np.int64)
            if cols.size == 0:
                continue
            rows_all = np.array(rows_list, dtype=np.int64)
            step = max(1, 2_000_000 // cols.size)  # bound the dense block's memory
            for lo in range(0, rows_all.size, step):
                rows = rows_all[lo : lo + step]
                s = np.broadcast_to(cols[None, :], (rows.size, cols.size)).reshape(-1)
                d = np.repeat(rows, cols.size)
                ok = self.slack(s, d) >= 0.0
                src_out.append(s[ok])
                dem_out.append(d[ok])
        return np.concatenate(src_out), np.concatenate(dem_out)


def _gather(ptr: I64, values: I64, rows: I64) -> I64:
    """Concatenation of values[ptr[r]:ptr[r+1]] for r in rows, vectorized."""
    starts, lens = ptr[rows], ptr[rows + 1] - ptr[rows]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total, dtype=np.int64)
    return np.asarray(values[offsets], dtype=np.int64)
