"""Plans: reviewed, edited by hand, rejected (stored by plan_create from a finished solve; approval:
plan_approval).

A plan's state is `proposed → approved | rejected | superseded`. Only a proposed plan may change.
Each edit is re-validated against the run's stored snapshot (the world as the solver saw it; approval
re-checks the world as it is now): the line's source must still reach its demand (compatible item,
deadline, expiry), no source may give more than the snapshot had, no demand may get more than it asked.
Per-demand results and KPIs are then recomputed by the optimizer's own `explain.build_plan` over the
edited flows, so an edited plan reports exactly as a solved one would.

The ETag covers the plan's version and the id of the last approved plan, since the review shows the
difference from that plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import func
from sqlmodel import Session, col, select

from app.allocation import runs_service, snapshot
from app.allocation.models import AllocationRun, Plan, PlanLine
from app.allocation.plan_create import PLAN_AUDIT_EXCLUDE as PLAN_AUDIT_EXCLUDE
from app.allocation.plan_create import create_plan as create_plan
from app.allocation.plan_create import parse_ref as parse_ref
from app.allocation.plan_schemas import DemandResultPublic, DiffLine, PlanDiff, PlanLinePublic, PlanPublic
from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.principal import Principal
from app.shipments.models import Shipment
from optimizer.explain import build_plan
from optimizer.io import plan_to_dict
from optimizer.model import Problem, SolverStats
from optimizer.network import Arcs, build_arcs, haversine_km

# Called with the plan's current ETag under the row lock: the router's If-Match check.
Precondition = Callable[[str], None] | None


# ---------------------------------------------------------------- reads


def find_plan(session: Session, *, run_id: int, lock: bool = False) -> Plan:
    stmt = select(Plan).where(Plan.run_id == run_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    plan = session.exec(stmt).first()
    if plan is None:
        run = runs_service.get_run_summary(session, run_id=run_id)
        if run is None:
            raise NotFound(f"allocation run {run_id} not found")
        raise NotFound(f"allocation run {run_id} has no plan (run is {run.status})")
    return plan


def lines_of(session: Session, plan_id: int) -> list[PlanLine]:
    return list(session.exec(select(PlanLine).where(PlanLine.plan_id == plan_id).order_by(col(PlanLine.id))).all())


def last_approved_id(session: Session, *, exclude_plan_id: int | None) -> int | None:
    stmt = select(Plan.id).where(Plan.state == "approved")
    if exclude_plan_id is not None:
        stmt = stmt.where(Plan.id != exclude_plan_id)
    return session.exec(stmt.order_by(col(Plan.decided_at).desc(), col(Plan.id).desc()).limit(1)).first()


def plan_etag(session: Session, plan: Plan) -> str:
    return f'"v{plan.version}-a{last_approved_id(session, exclude_plan_id=plan.id) or 0}"'


def _quantities_by_line(session: Session, plan_id: int) -> dict[int, int]:
    rows = session.exec(
        select(PlanLine.request_line_id, func.sum(PlanLine.quantity))
        .where(PlanLine.plan_id == plan_id)
        .group_by(col(PlanLine.request_line_id))
    ).all()
    return {line_id: int(total) for line_id, total in rows}


def diff_from_last_approved(session: Session, plan: Plan, lines: Iterable[tuple[int, int]]) -> PlanDiff:
    """`lines`: this plan's (request line id, quantity) pairs."""
    approved_id = last_approved_id(session, exclude_plan_id=plan.id)
    if approved_id is None:
        return PlanDiff(approved_plan_id=None, lines=[])
    mine: dict[int, int] = defaultdict(int)
    for request_line_id, quantity in lines:
        mine[request_line_id] += quantity
    theirs = _quantities_by_line(session, approved_id)
    out = [
        DiffLine(
            request_line_id=i,
            quantity=mine.get(i, 0),
            approved_quantity=theirs.get(i, 0),
            delta=mine.get(i, 0) - theirs.get(i, 0),
        )
        for i in sorted(set(mine) | set(theirs))
        if mine.get(i, 0) != theirs.get(i, 0)
    ]
    return PlanDiff(approved_plan_id=approved_id, lines=out)


# GET …/plan of a state-size run serves ~17,000 lines and ~17,000 demands (7 MB). Loading the lines
# as ORM objects and building each API object in Python cost ~0.8 s of the ~1 s read; a column select
# validated as a whole by pydantic-core (Rust) costs a fraction of that. Same JSON either way.
_PUBLIC_LINE_COLUMNS = (
    col(PlanLine.id),
    col(PlanLine.source_ref).label("source"),
    col(PlanLine.lot_id),
    col(PlanLine.pledge_id),
    col(PlanLine.request_line_id),
    col(PlanLine.item_id),
    col(PlanLine.origin_site_id),
    col(PlanLine.destination_site_id),
    col(PlanLine.quantity),
    col(PlanLine.distance_km),
    col(PlanLine.cost),
    col(PlanLine.manual),
)
_PUBLIC_LINES = TypeAdapter(list[PlanLinePublic])
_PUBLIC_DEMANDS = TypeAdapter(list[DemandResultPublic])


def public_lines(session: Session, plan_id: int) -> list[PlanLinePublic]:
    session.flush()  # a Core query does not autoflush: include this transaction's edits
    stmt = select(*_PUBLIC_LINE_COLUMNS).where(col(PlanLine.plan_id) == plan_id).order_by(col(PlanLine.id))
    rows = session.connection().execute(stmt)
    keys = list(rows.keys())
    return _PUBLIC_LINES.validate_python([dict(zip(keys, row, strict=True)) for row in rows])


def public_demands(plan: Plan) -> list[DemandResultPublic]:
    """Per-demand results as stored (Plan JSON v1), with the request line id and requested quantity."""
    return _PUBLIC_DEMANDS.validate_python(
        [
            {
                "id": d["id"],
                "request_line_id": parse_ref(str(d["id"]), "line"),
                "requested": int(d["allocated"]) + int(d.get("unmet", 0)),
                "allocated": int(d["allocated"]),
                "fill_rate": float(d.get("fill_rate", 0.0)),
                "unmet": int(d.get("unmet", 0)),
                "reason": d.get("reason"),
            }
            for d in plan.demands
        ]
    )


def to_public(session: Session, plan: Plan) -> PlanPublic:
    lines = public_lines(session, plan.id or 0)
    shipment_ids = session.exec(select(Shipment.id).where(Shipment.plan_id == plan.id).order_by(col(Shipment.id))).all()
    return PlanPublic(
        **plan.model_dump(exclude={"demands"}),
        lines=lines,
        demands=public_demands(plan),
        diff_from_last_approved=diff_from_last_approved(
            session, plan, ((x.request_line_id, x.quantity) for x in lines)
        ),
        shipment_ids=[i for i in shipment_ids if i is not None],
    )


# ---------------------------------------------------------------- changes to a proposed plan


def lock_proposed(session: Session, *, run_id: int, precondition: Precondition, action: str) -> Plan:
    """The run's plan, locked; 409 unless proposed, then the If-Match check (412 when stale)."""
    plan = find_plan(session, run_id=run_id, lock=True)
    if plan.state != "proposed":
        raise Conflict(f"plan {plan.id} is {plan.state}; only a proposed plan can be {action}")
    if precondition is not None:
        precondition(plan_etag(session, plan))
    return plan


def _touch(plan: Plan) -> None:
    plan.version += 1
    plan.updated_at = utcnow()


class _Snapshot:
    """The run's snapshot as the optimizer sees it, with id lookups for plan lines."""

    def __init__(self, run: AllocationRun) -> None:
        if not run.problem:
            raise Conflict(f"allocation run {run.id} has no stored snapshot to check edits against")
        self.problem: Problem = snapshot.load_snapshot(run.problem)
        self.arcs: Arcs = build_arcs(self.problem)
        self.source_index = {s.id: i for i, s in enumerate(self.problem.sources)}
        self.demand_index = {d.id: i for i, d in enumerate(self.problem.demands)}

    def arc(self, line: PlanLine) -> int | None:
        s = self.source_index.get(line.source_ref)
        d = self.demand_index.get(f"line-{line.request_line_id}")
        if s is None or d is None:
            return None
        lo, hi = int(self.arcs.demand_start[d]), int(self.arcs.demand_start[d + 1])
        hits = np.flatnonzero(self.arcs.source[lo:hi] == s)
        return lo + int(hits[0]) if hits.size else None

    def why_infeasible(self, line: PlanLine) -> str:
        s = self.source_index.get(line.source_ref)
        d = self.demand_index.get(f"line-{line.request_line_id}")
        if s is None:
            return f"source {line.source_ref} is not in the run's snapshot"
        if d is None:
            return f"request line {line.request_line_id} is not in the run's snapshot"
        src, dem = self.problem.sources[s], self.problem.demands[d]
        subs = {x.sku for it in self.problem.items if it.sku == dem.item for x in it.substitutes}
        if src.item != dem.item and src.item not in subs:
            return f"{src.id} holds {src.item}, which may not fill a demand for {dem.item}"
        if src.quantity <= 0:
            return f"{src.id} had no units in the snapshot"
        km = float(haversine_km(src.lat, src.lon, dem.lat, dem.lon))
        start = max(self.problem.now, src.available_at or self.problem.now)
        hours = km / self.problem.settings.speed_kmh
        if dem.needed_by is not None and (dem.needed_by - start).total_seconds() / 3600 < hours:
            return f"{src.id} cannot reach {dem.id} by its needed_by ({km:.0f} km)"
        return f"{src.id} expires before it can reach {dem.id} ({km:.0f} km)"

    def check_totals(self, lines: Sequence[PlanLine], edited: PlanLine) -> None:
        """No source gives more than the snapshot had, no demand gets more than it asked for."""
        by_source = sum(x.quantity for x in lines if x.source_ref == edited.source_ref)
        by_demand = sum(x.quantity for x in lines if x.request_line_id == edited.request_line_id)
        source = self.problem.sources[self.source_index[edited.source_ref]]
        demand = self.problem.demands[self.demand_index[f"line-{edited.request_line_id}"]]
        if by_source > source.quantity:
            raise Unprocessable(
                f"{source.id} had {source.quantity} units in the snapshot; the plan would take {by_source}",
                field="quantity",
            )
        if by_demand > demand.quantity:
            raise Unprocessable(
                f"{demand.id} asked for {demand.quantity} units; the plan would give it {by_demand}", field="quantity"
            )

    def recompute(self, plan: Plan, lines: Sequence[PlanLine]) -> None:
        flow = np.zeros(self.arcs.n, dtype=np.int64)
        for line in lines:
            k = self.arc(line)
            if k is None:
                raise Conflict(
                    f"plan line {line.id} is not feasible in the run's snapshot: {self.why_infeasible(line)}"
                )
            flow[k] += line.quantity
        rebuilt = plan_to_dict(
            build_plan(self.problem, self.arcs, flow, status=plan.solver_status, stats=SolverStats(wall_s=0.0))  # type: ignore[arg-type]
        )
        plan.demands = rebuilt["demands"]
        plan.kpis = rebuilt["kpis"]


def _find_line(lines: Sequence[PlanLine], plan: Plan, line_id: int) -> PlanLine:
    for line in lines:
        if line.id == line_id:
            return line
    raise NotFound(f"plan {plan.id} has no line {line_id}")


def _edit(
    session: Session,
    *,
    actor: Principal,
    run_id: int,
    line_id: int,
    quantity: int | None,
    precondition: Precondition,
) -> Plan:
    """Change a line's quantity (or remove it when `quantity` is None), re-validate, recompute."""
    plan = lock_proposed(session, run_id=run_id, precondition=precondition, action="edited")
    lines = lines_of(session, plan.id or 0)
    line = _find_line(lines, plan, line_id)
    before = audit.snapshot(plan, exclude=PLAN_AUDIT_EXCLUDE) | {"line": audit.snapshot(line)}
    world = _Snapshot(runs_service.get_run(session, principal=actor, run_id=run_id))
    if quantity is None:
        remaining = [x for x in lines if x.id != line_id]
        session.delete(line)
        action = "plan.line_remove"
    else:
        k = world.arc(line)
        if k is None:
            raise Conflict(f"plan line {line_id} is not feasible: {world.why_infeasible(line)}", field="line_id")
        line.quantity = quantity
        line.distance_km = round(float(world.arcs.distance_km[k]), 3)
        line.cost = round(quantity * float(world.arcs.unit_cost[k]), 4)
        line.manual = True
        world.check_totals(lines, line)
        remaining = lines
        session.add(line)
        action = "plan.line_update"
    world.recompute(plan, remaining)
    plan.edited = True
    _touch(plan)
    session.add(plan)
    session.flush()
    after = audit.snapshot(plan, exclude=PLAN_AUDIT_EXCLUDE) | {
        "line": None if quantity is None else audit.snapshot(line)
    }
    audit.record(session, actor=actor, action=action, obj=plan, before=before, after=after)
    return plan


def update_line(
    session: Session, *, actor: Principal, run_id: int, line_id: int, quantity: int, precondition: Precondition = None
) -> Plan:
    return _edit(session, actor=actor, run_id=run_id, line_id=line_id, quantity=quantity, precondition=precondition)


def remove_line(
    session: Session, *, actor: Principal, run_id: int, line_id: int, precondition: Precondition = None
) -> Plan:
    return _edit(session, actor=actor, run_id=run_id, line_id=line_id, quantity=None, precondition=precondition)


def decide(plan: Plan, *, actor: Principal, state: str) -> None:
    plan.state = state
    plan.decided_by_key_id = actor.key_id
    plan.decided_at = utcnow()
    _touch(plan)


def reject(session: Session, *, actor: Principal, run_id: int, precondition: Precondition = None) -> Plan:
    """The plan stays, for the record; nothing is reserved or shipped."""
    plan = lock_proposed(session, run_id=run_id, precondition=precondition, action="rejected")
    before = audit.snapshot(plan, exclude=PLAN_AUDIT_EXCLUDE)
    decide(plan, actor=actor, state="rejected")
    session.add(plan)
    session.flush()
    audit.record(session, actor=actor, action="plan.reject", obj=plan, before=before, exclude=PLAN_AUDIT_EXCLUDE)
    return plan
