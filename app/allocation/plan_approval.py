"""Approving a plan: reserve, commit, ship — all in one transaction, or nothing.

The world may have moved since the snapshot (stock adjusted or reserved by another plan, pledges
cancelled, requests cancelled or served). Approval locks everything the plan touches, checks every line
against the world as it is now, and either writes everything — ledger reservations, pledge
commitments, request line progress, shipments grouped by origin → destination, the plan's decision,
older overlapping proposed plans superseded — or raises one 409 listing every conflict.

Lock order (the same everywhere rows are shared, so concurrent approvals and shipment events cannot
deadlock): the plan row, then lots, pledges, requests and request lines in ascending id order, the
change-feed counter last. Fifty concurrent approvals of one plan queue on the plan row; the first
approves, the others find it approved (409). Plans to supersede are taken with SKIP LOCKED: a plan
being approved or edited right now is left to that transaction.

Test-only hook: when the environment variable CRISIS_TEST_APPROVAL_PAUSE_FILE names a file, approval,
after it has created the shipments and reserved the lots (flushed, uncommitted) and before it commits
pledges, advances request lines and decides the plan, creates that file and waits until it is removed
(at most 120 s). Tests use it to kill -9 the API process provably inside the approval's transaction
(tests/test_faults.py). Never set it in production.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from app.allocation import plans_service as plans
from app.allocation import runs_service
from app.allocation.models import AllocationRun, Plan, PlanLine
from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict
from app.inventory import service as inventory
from app.inventory.models import InventoryLot
from app.pledges import service as pledges
from app.pledges.models import Pledge
from app.principal import Principal
from app.shipments import feed, fulfilment
from app.shipments import service as shipments
from app.shipments.fulfilment import LineDelta, LockedLines

PAUSE_FILE_ENV = "CRISIS_TEST_APPROVAL_PAUSE_FILE"
PAUSE_MAX_S = 120.0


def _pause_for_tests(session: Session, plan_id: int) -> None:
    """Test-only (see the module docstring): hold the open transaction until the test removes the file."""
    path = os.environ.get(PAUSE_FILE_ENV)
    if not path:
        return
    session.flush()  # the partial changes are in the database (uncommitted), not only in the session
    Path(path).write_text(str(plan_id))
    deadline = time.monotonic() + PAUSE_MAX_S
    while Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _locked(session: Session, model: Any, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    stmt = (
        select(model)
        .where(col(model.id).in_(sorted(ids)))
        .order_by(col(model.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.id: row for row in session.exec(stmt).all()}


def _totals(lines: list[PlanLine], key: str) -> dict[int, tuple[int, list[int]]]:
    """Quantity needed per lot / pledge / request line, with the plan lines asking for it."""
    qty: dict[int, int] = defaultdict(int)
    who: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        ident = getattr(line, key)
        if ident is not None:
            qty[ident] += line.quantity
            who[ident].append(line.id or 0)
    return {i: (qty[i], who[i]) for i in sorted(qty)}


def _conflict(
    kind: str, ident: int, line_ids: list[int], needed: int, available: int, reason: str, detail: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "id": ident,
        "plan_line_ids": line_ids,
        "needed": needed,
        "available": available,
        "reason": reason,
        "detail": detail,
    }


def find_conflicts(
    lines: list[PlanLine], lots: dict[int, InventoryLot], offers: dict[int, Pledge], requested: LockedLines
) -> list[dict[str, Any]]:
    """Every way the (locked) world no longer fits the plan."""
    now = utcnow()
    out: list[dict[str, Any]] = []
    for lot_id, (need, who) in _totals(lines, "lot_id").items():
        lot = lots.get(lot_id)
        if lot is None:
            out.append(_conflict("lot", lot_id, who, need, 0, "missing", f"lot {lot_id} no longer exists"))
        elif lot.expires_at is not None and lot.expires_at <= now:
            out.append(
                _conflict(
                    "lot", lot_id, who, need, 0, "expired", f"lot {lot_id} expired at {lot.expires_at.isoformat()}"
                )
            )
        elif lot.on_hand - lot.reserved < need:
            free = lot.on_hand - lot.reserved
            out.append(
                _conflict(
                    "lot",
                    lot_id,
                    who,
                    need,
                    free,
                    "insufficient_stock",
                    f"lot {lot_id} has {free} unreserved units; the plan needs {need}",
                )
            )
    for pledge_id, (need, who) in _totals(lines, "pledge_id").items():
        pledge = offers.get(pledge_id)
        if pledge is None:
            out.append(_conflict("pledge", pledge_id, who, need, 0, "missing", f"pledge {pledge_id} no longer exists"))
        elif pledge.status != "confirmed":
            out.append(
                _conflict("pledge", pledge_id, who, need, 0, "not_confirmed", f"pledge {pledge_id} is {pledge.status}")
            )
        elif pledge.expires_at is not None and pledge.expires_at <= now:
            out.append(
                _conflict(
                    "pledge",
                    pledge_id,
                    who,
                    need,
                    0,
                    "expired",
                    f"pledge {pledge_id} expired at {pledge.expires_at.isoformat()}",
                )
            )
        elif pledge.quantity - pledge.committed < need:
            free = pledge.quantity - pledge.committed
            out.append(
                _conflict(
                    "pledge",
                    pledge_id,
                    who,
                    need,
                    free,
                    "insufficient_pledge",
                    f"pledge {pledge_id} has {free} uncommitted units; the plan needs {need}",
                )
            )
    for line_id, (need, who) in _totals(lines, "request_line_id").items():
        line = requested.lines.get(line_id)
        if line is None:
            out.append(
                _conflict("request_line", line_id, who, need, 0, "missing", f"request line {line_id} no longer exists")
            )
        elif line.status == "cancelled":
            out.append(
                _conflict("request_line", line_id, who, need, 0, "cancelled", f"request line {line_id} was cancelled")
            )
        elif line.remaining < need:
            out.append(
                _conflict(
                    "request_line",
                    line_id,
                    who,
                    need,
                    line.remaining,
                    "insufficient_remaining",
                    f"request line {line_id} still needs {line.remaining} units; the plan gives {need}",
                )
            )
    return out


def _planned_lines(
    lines: list[PlanLine], lots: dict[int, InventoryLot], offers: dict[int, Pledge], requested: LockedLines
) -> list[shipments.PlannedLine]:
    """Where each line ships from and to, as the world is now (a request's delivery site may have moved)."""
    out = []
    for line in lines:
        request = requested.requests[requested.lines[line.request_line_id].request_id]
        origin = lots[line.lot_id].site_id if line.lot_id is not None else offers[line.pledge_id or 0].site_id
        out.append(
            shipments.PlannedLine(
                plan_line_id=line.id or 0,
                request_line_id=line.request_line_id,
                lot_id=line.lot_id,
                pledge_id=line.pledge_id,
                item_id=line.item_id,
                quantity=line.quantity,
                origin_site_id=origin,
                destination_site_id=request.site_id,
                destination_organization_id=request.organization_id,
            )
        )
    return out


def _supersede_older(session: Session, *, actor: Principal, plan: Plan, run: AllocationRun) -> list[int]:
    """Proposed plans of runs created before this one whose scope overlaps it become superseded."""
    rows = session.exec(
        select(
            Plan.id,
            AllocationRun.id,
            AllocationRun.created_at,
            AllocationRun.scope_regions,
            AllocationRun.scope_item_ids,
        )
        .join(AllocationRun, col(AllocationRun.id) == col(Plan.run_id))
        .where(Plan.state == "proposed", Plan.id != plan.id)
    ).all()
    older = [
        plan_id
        for plan_id, run_id, created_at, regions, item_ids in rows
        if (created_at, run_id) < (run.created_at, run.id)
        and runs_service.scopes_overlap(regions, item_ids, run.scope_regions, run.scope_item_ids)
    ]
    if not older:
        return []
    stmt = (
        select(Plan)
        .where(col(Plan.id).in_(older))
        .order_by(col(Plan.id))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    done = []
    for other in session.exec(stmt).all():
        if other.state != "proposed":
            continue
        before = audit.snapshot(other, exclude=plans.PLAN_AUDIT_EXCLUDE)
        plans.decide(other, actor=actor, state="superseded")
        session.add(other)
        session.flush()
        audit.record(
            session, actor=actor, action="plan.supersede", obj=other, before=before, exclude=plans.PLAN_AUDIT_EXCLUDE
        )
        done.append(other.id or 0)
    return done


def approve(session: Session, *, actor: Principal, run_id: int, precondition: plans.Precondition = None) -> Plan:
    plan = plans.lock_proposed(session, run_id=run_id, precondition=precondition, action="approved")
    run = runs_service.get_run_summary(session, run_id=run_id)
    assert run is not None  # the plan's foreign key
    lines = plans.lines_of(session, plan.id or 0)
    lots = _locked(session, InventoryLot, {x.lot_id for x in lines if x.lot_id is not None})
    offers = _locked(session, Pledge, {x.pledge_id for x in lines if x.pledge_id is not None})
    requested = fulfilment.lock_lines(session, {x.request_line_id for x in lines})

    conflicts = find_conflicts(lines, lots, offers, requested)
    if conflicts:
        raise Conflict(
            f"plan {plan.id} no longer fits the current stock, pledges or requests ({len(conflicts)} conflicts)",
            extra={"conflicts": conflicts},
        )

    before = audit.snapshot(plan, exclude=plans.PLAN_AUDIT_EXCLUDE)
    created = shipments.create_for_plan(
        session, actor=actor, plan_id=plan.id or 0, lines=_planned_lines(lines, lots, offers, requested)
    )
    shipped_on = {ln.plan_line_id: s.id for s, out in created for ln in out}
    for line in sorted(lines, key=lambda x: (x.lot_id or 0, x.id or 0)):
        if line.lot_id is not None:
            ref = f"shipment:{shipped_on[line.id]}"
            inventory.reserve(session, actor=actor, lot_id=line.lot_id, quantity=line.quantity, reference=ref)
    _pause_for_tests(session, plan.id or 0)
    for line in sorted(lines, key=lambda x: (x.pledge_id or 0, x.id or 0)):
        if line.pledge_id is not None:
            ref = f"shipment:{shipped_on[line.id]}"
            pledges.commit(session, actor=actor, pledge_id=line.pledge_id, quantity=line.quantity, reference=ref)
    deltas: dict[int, LineDelta] = defaultdict(LineDelta)
    for line in lines:
        deltas[line.request_line_id].reserved += line.quantity
    fulfilment.apply(session, actor=actor, deltas=dict(deltas), action="request.allocate", locked=requested)

    plans.decide(plan, actor=actor, state="approved")
    session.add(plan)
    superseded = _supersede_older(session, actor=actor, plan=plan, run=run)
    session.flush()
    after = audit.snapshot(plan, exclude=plans.PLAN_AUDIT_EXCLUDE) | {
        "shipment_ids": [s.id for s, _ in created],
        "superseded_plan_ids": superseded,
    }
    audit.record(session, actor=actor, action="plan.approve", obj=plan, before=before, after=after)
    feed.stamp(session, [s for s, _ in created])
    return plan
