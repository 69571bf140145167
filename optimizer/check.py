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
3. **Certificate** (SPEC §3.3) — no unfilled demand r can get one more unit while every higher-tier
   demand, and every same-tier demand at or below r's new level, keeps its quantity. Decided as a
   max-flow with lower bounds by ``optimizer.certificate`` (formulation and proof there): every
   candidate on problems with ≤ ``sample_limit`` demands, a sample beyond, plus a stranded-stock pass
   over all of them. Only examined when the plan is feasible (the search walks the plan's flow).

Tolerances: an allocation may arrive up to ``TIME_TOL_H`` after its limit (two correct float
computations of one arrival time can differ in the last bits); the certificate's arcs use SPEC §3.2
with no tolerance (they match ``network.build_arcs`` exactly on the benchmark scenarios). Levels within
``certificate.LEVEL_RTOL`` count as ties, and ties are protected — in the plan's favour. Reported floats
may be rounded (km to 1e-3, money to 1e-4); KPIs are compared at relative 1e-9 plus that rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from optimizer.certificate import Method, Network, Outcome, certify
from optimizer.model import PRIORITIES, Plan, Problem

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

TIME_TOL_H = 1e-6  # 3.6 ms: float noise between two correct computations of an arrival time
NUM_RTOL = 1e-9  # reported floats (distance, cost, KPIs) against recomputed ones, plus rounding:
KM_ATOL = 1e-3  # plans may round km to 3 decimals
MONEY_ATOL = 1e-4  # and money to 4
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
    certificate_failures: tuple[str, ...] = ()  # ids of demands that could get one more unit (all of them)


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
        stocked = {s.item for s in p.sources if s.quantity > 0}
        # "No source holds a compatible item" (SPEC §3.4): an empty lot holds nothing.
        self.compatible = np.array(
            [any(sku in stocked for sku in self.penalty[d.item]) for d in p.demands], dtype=np.bool_
        )
        self.arc_src, self.arc_dem = self._feasible_arcs(p)
        order = np.argsort(self.arc_dem, kind="stable")  # each demand's sources are already ascending
        self.arc_src, self.arc_dem = self.arc_src[order], self.arc_dem[order]
        self.dem_ptr = np.searchsorted(self.arc_dem, np.arange(len(p.demands) + 1)).astype(np.int64)

    def slack(self, s: I64, d: I64) -> F64:
        """Hours to spare on arcs s[k] → d[k] (negative = late or expired)."""
        km = great_circle_km(self.s_lat[s], self.s_lon[s], self.d_lat[d], self.d_lon[d])
        arrival = self.ready[s] + km / self.speed
        return np.asarray(np.minimum(self.deadline[d], self.expiry[s]) - arrival, dtype=np.float64)

    def _feasible_arcs(self, p: Problem) -> tuple[I64, I64]:
        by_item: dict[str, list[int]] = {}
        for j, dem in enumerate(p.demands):
            by_item.setdefault(dem.item, []).append(j)
        code = {it.sku: k for k, it in enumerate(p.items)}
        s_item = np.array([code[s.item] for s in p.sources], dtype=np.int64)
        src_out: list[I64] = [np.zeros(0, np.int64)]
        dem_out: list[I64] = [np.zeros(0, np.int64)]
        for sku, rows_list in by_item.items():
            usable = np.isin(s_item, [code[k] for k in self.penalty[sku]]) & (self.cap > 0)
            cols = np.flatnonzero(usable).astype(np.int64)
            if cols.size == 0:
                continue
            rows_all = np.array(rows_list, dtype=np.int64)
            step = max(1, 2_000_000 // cols.size)  # bound the dense block's memory
            for lo in range(0, rows_all.size, step):
                rows = rows_all[lo : lo + step]
                # Demand lines share sites: one distance per (site, source), then each line's deadline.
                site, inv = np.unique(
                    np.stack([self.d_lat[rows], self.d_lon[rows]], axis=1), axis=0, return_inverse=True
                )
                km = great_circle_km(site[:, :1], site[:, 1:], self.s_lat[cols][None, :], self.s_lon[cols][None, :])
                arrival = (self.ready[cols][None, :] + km / self.speed)[inv.reshape(-1)]
                limit = np.minimum(self.deadline[rows][:, None], self.expiry[cols][None, :])
                r_ok, c_ok = np.nonzero(arrival <= limit)  # row-major: sources ascending per demand
                src_out.append(cols[c_ok])
                dem_out.append(rows[r_ok])
        return np.concatenate(src_out), np.concatenate(dem_out)


# --------------------------------------------------------------------------- checks


def check(
    problem: Problem,
    plan: Plan,
    *,
    sample_limit: int = 5000,
    sample_size: int = 200,
    certificate: bool = True,
    method: Method = "residual",
) -> CheckReport:
    """Verify ``plan`` for ``problem``; ``ok`` only when every check passes (see the module docstring).

    The certificate covers every unfilled demand when the problem has ≤ ``sample_limit`` demands;
    beyond, the ``sample_size`` lowest-level ones of each tier plus ``sample_size`` others drawn with a
    fixed seed. ``certificate=False`` skips it (baseline plans are feasible but not fair).
    """
    world = _World(problem)
    errs = _Errors()
    f_src, f_dem, f_qty = _check_allocations(problem, plan, world, errs)
    x = np.bincount(f_dem, weights=f_qty, minlength=len(problem.demands)).astype(np.int64)
    feasible = not errs
    _check_demands(problem, plan, world, x, f_src, f_dem, errs)
    _check_kpis(problem, plan, world, x, f_src, f_dem, f_qty, errs)
    out = Outcome()
    if certificate and feasible:
        net = Network(world.cap, world.q, world.w, world.tier, world.arc_src, world.arc_dem, world.dem_ptr)
        out = certify(net, x, f_src, f_dem, f_qty, sample_limit=sample_limit, sample_size=sample_size, method=method)
        _report_certificate(problem, x, out, errs)
    elif certificate:
        errs.add("certificate", "not examined: the plan is infeasible")
    return CheckReport(
        ok=not errs,
        errors=errs.final(),
        allocations_checked=len(plan.allocations),
        demands_checked=len(plan.demands),
        certificate_candidates=out.candidates,
        certificate_checked=out.checked,
        certificate_complete=out.complete,
        stranded_checked=out.stranded_checked,
        certificate_failures=tuple(sorted({problem.demands[j].id for j, *_ in out.stranded + out.improvable})),
    )


def _report_certificate(problem: Problem, x: I64, out: Outcome, errs: _Errors) -> None:
    def who(j: int) -> str:
        d = problem.demands[j]
        return f"demand {d.id} ({d.priority}, {x[j]}/{d.quantity})"

    for j, i, spare in out.stranded:
        errs.add(
            "stranded", f"{who(j)} is short while source {problem.sources[i].id} it can reach has {spare} units left"
        )
    for j, i in out.improvable:
        via = f" (spare stock at source {problem.sources[i].id})" if i >= 0 else ""
        errs.add(
            "certificate",
            f"{who(j)} can get one more unit without taking any from a higher tier or "
            f"from a same-tier demand at or below its new level{via}",
        )


def _close(reported: float, expected: float, atol: float = 1e-12) -> bool:
    return math.isfinite(reported) and abs(reported - expected) <= atol + NUM_RTOL * abs(expected)


def _close_all(reported: F64, expected: F64, atol: float) -> B:
    return np.isfinite(reported) & (np.abs(reported - expected) <= atol + NUM_RTOL * np.abs(expected))


def _check_allocations(problem: Problem, plan: Plan, world: _World, errs: _Errors) -> tuple[I64, I64, I64]:
    """Feasibility of every line; returns the valid lines' flow aggregated per (source, demand)."""
    rows: list[tuple[int, int, int, int]] = []  # line, source, demand, quantity
    for k, a in enumerate(plan.allocations):
        i, j = world.src_index.get(a.source), world.dem_index.get(a.demand)
        if i is None or j is None:
            what = f"source {a.source!r}" if i is None else f"demand {a.demand!r}"
            errs.add("unknown_id", f"allocations[{k}] names unknown {what}")
            continue
        qty = a.quantity
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:
            errs.add("quantity", f"allocations[{k}] quantity {qty!r} is not a non-negative integer")
            continue
        src, dem = problem.sources[i], problem.demands[j]
        if a.item != src.item:
            errs.add("item", f"allocations[{k}] says item {a.item!r} but source {src.id} holds {src.item!r}")
        if src.item not in world.penalty[dem.item]:
            errs.add("incompatible", f"allocations[{k}]: {src.item} cannot fill a demand for {dem.item}")
            continue
        rows.append((k, i, j, qty))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        _check_totals(problem, world, empty, empty, empty, errs)
        return empty, empty, empty
    line, s, d, units = (np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))
    slack = world.slack(s, d)
    for k in np.flatnonzero(slack < -TIME_TOL_H).tolist():
        a = plan.allocations[int(line[k])]
        errs.add("late", f"{a.source} → {a.demand} arrives {-slack[k]:.3f} h after the deadline or expiry")
    km = great_circle_km(world.s_lat[s], world.s_lon[s], world.d_lat[d], world.d_lon[d])
    pen = _penalties(problem, world, s, d)
    cost = units * (km * world.cpk + pen)
    lines = [plan.allocations[k] for k in line.tolist()]
    for field, want, atol in (("distance_km", km, KM_ATOL), ("cost", cost, MONEY_ATOL)):
        got = np.array([getattr(a, field) for a in lines], dtype=np.float64)
        for k in np.flatnonzero(~_close_all(got, want, atol)).tolist():
            a = lines[k]
            errs.add(field, f"{a.source} → {a.demand}: reported {field} {got[k]}, expected {want[k]:.6f}")
    _check_totals(problem, world, s, d, units, errs)
    key, inverse = np.unique(s * max(1, len(problem.demands)) + d, return_inverse=True)
    agg = np.bincount(inverse.reshape(-1), weights=units).astype(np.int64)
    keep = agg > 0
    n_d = max(1, len(problem.demands))
    return key[keep] // n_d, key[keep] % n_d, agg[keep]


def _penalties(problem: Problem, world: _World, s: I64, d: I64) -> F64:
    """Substitution penalty per unit on arcs s[k] → d[k] (0 for the demanded SKU itself)."""
    src, dem = problem.sources, problem.demands
    return np.array(
        [world.penalty[dem[j].item][src[i].item] for i, j in zip(s.tolist(), d.tolist(), strict=True)], dtype=np.float64
    )


def _check_totals(problem: Problem, world: _World, s: I64, d: I64, qty: I64, errs: _Errors) -> None:
    used = np.bincount(s, weights=qty, minlength=len(problem.sources)).astype(np.int64)
    for i in np.flatnonzero(used > world.cap):
        errs.add("source_over", f"source {problem.sources[i].id} gives {used[i]} > its {world.cap[i]}")
    got = np.bincount(d, weights=qty, minlength=len(problem.demands)).astype(np.int64)
    for j in np.flatnonzero(got > world.q):
        errs.add("demand_over", f"demand {problem.demands[j].id} gets {got[j]} > requested {world.q[j]}")


def _expected_reasons(world: _World, x: I64, f_src: I64, f_dem: I64) -> list[str | None]:
    """SPEC §3.4: null when met; else the first of the four reasons that applies."""
    # Highest tier (lowest rank) each source served in this plan; 3 = none.
    served = np.full(world.cap.size, len(PRIORITIES), dtype=np.int64)
    np.minimum.at(served, f_src, world.tier[f_dem])
    outranked = np.zeros(world.q.size, dtype=np.bool_)
    outranked[world.arc_dem[served[world.arc_src] < world.tier[world.arc_dem]]] = True
    reachable = np.diff(world.dem_ptr) > 0
    out: list[str | None] = []
    for j in range(world.q.size):
        if x[j] >= world.q[j]:
            out.append(None)
        elif not world.compatible[j]:
            out.append("no_compatible_supply")
        elif not reachable[j]:
            out.append("unreachable_by_deadline")
        else:
            out.append("lower_priority" if outranked[j] else "shortage")
    return out


def _check_demands(problem: Problem, plan: Plan, world: _World, x: I64, f_src: I64, f_dem: I64, errs: _Errors) -> None:
    expected = _expected_reasons(world, x, f_src, f_dem)
    seen: set[int] = set()
    for k, r in enumerate(plan.demands):
        j = world.dem_index.get(r.id)
        if j is None or j in seen:
            errs.add("demand_rows", f"demands[{k}]: {'duplicate' if j is not None else 'unknown'} id {r.id!r}")
            continue
        seen.add(j)
        xj, qj = int(x[j]), int(world.q[j])
        if r.allocated != xj or r.unmet != qj - xj:
            errs.add(
                "demand_numbers",
                f"{r.id}: reports {r.allocated} allocated / {r.unmet} unmet, allocations give {xj} of {qj}",
            )
        if not _close(r.fill_rate, xj / qj):
            errs.add("fill_rate", f"{r.id}: reports fill {r.fill_rate}, expected {xj / qj}")
        if r.reason != expected[j]:
            errs.add("reason", f"{r.id}: reason {r.reason!r}, expected {expected[j]!r}")
    missing = [d.id for j, d in enumerate(problem.demands) if j not in seen]
    for ident in missing:
        errs.add("demand_rows", f"demand {ident!r} missing from the plan")


def _check_kpis(
    problem: Problem, plan: Plan, world: _World, x: I64, f_src: I64, f_dem: I64, f_qty: I64, errs: _Errors
) -> None:
    k = plan.kpis
    fill = x / world.q
    level = x / (world.w * world.q)
    for t, name in enumerate(PRIORITIES):
        got = k.by_priority.get(name)
        if got is None:
            errs.add("kpi", f"by_priority.{name} missing")
            continue
        sel = world.tier == t
        n = int(sel.sum())
        sq = math.fsum((fill[sel] ** 2).tolist())
        want = {
            "requested": float(world.q[sel].sum()),
            "allocated": float(x[sel].sum()),
            "min_fill_rate": float(fill[sel].min()) if n else 0.0,
            "min_level": float(level[sel].min()) if n else 0.0,
            "jain_index": math.fsum(fill[sel].tolist()) ** 2 / (n * sq) if n and sq > 0 else 1.0,
            "demands_unserved": float((x[sel] == 0).sum()),
        }
        for field, value in want.items():
            if not _close(float(getattr(got, field)), value):
                errs.add("kpi", f"by_priority.{name}.{field} = {getattr(got, field)}, expected {value}")
    km = great_circle_km(world.s_lat[f_src], world.s_lon[f_src], world.d_lat[f_dem], world.d_lon[f_dem])
    unit_km = math.fsum((f_qty * km).tolist())
    src, dem = problem.sources, problem.demands
    sub = np.array(
        [src[i].item != dem[j].item for i, j in zip(f_src.tolist(), f_dem.tolist(), strict=True)], dtype=np.bool_
    )
    pen = _penalties(problem, world, f_src, f_dem)
    totals = {
        "unit_km": (unit_km, KM_ATOL),
        "transport_cost": (unit_km * world.cpk, MONEY_ATOL),
        "substituted_units": (float(f_qty[sub].sum()), 0.0),
        "substitution_penalty": (math.fsum((f_qty * pen).tolist()), MONEY_ATOL),
    }
    for field, (value, atol) in totals.items():
        if not _close(float(getattr(k, field)), value, atol or 1e-12):
            errs.add("kpi", f"{field} = {getattr(k, field)}, expected {value}")
