"""Allocation runs: create (snapshot + queue), read, list, cancel; and the state changes workers make.

A run's scope is a set of regions and a set of items (empty = all); two scopes overlap when they
share a (region, item) pair. A new run whose scope overlaps a queued or running run is refused (409).
The check is race-free: PostgreSQL takes a transaction-level advisory lock before checking; SQLite
transactions start with BEGIN IMMEDIATE and so are serialized already.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from app.allocation import snapshot
from app.allocation.models import ACTIVE_RUN_STATUSES, AllocationRun, Plan
from app.allocation.runs_schemas import RunCreate, RunProgress, RunPublic, RunScope
from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound
from app.items import service as items
from app.pagination import Page, paginate
from app.principal import Principal

# Arbitrary constant naming the "allocation run scopes" advisory lock on PostgreSQL.
SCOPE_LOCK_KEY = 7_311_402_905
TERMINAL_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
AUDIT_EXCLUDE = {"problem"}  # the snapshot can be megabytes; GET …/problem serves it


def runs_without_problem() -> Any:
    """SELECT allocation_runs without the (possibly large) snapshot column."""
    return select(AllocationRun).options(defer(col(AllocationRun.problem)))


def get_run(session: Session, *, principal: Principal, run_id: int, lock: bool = False) -> AllocationRun:
    """The run with its snapshot (`problem`); 404 when missing. `lock` = FOR UPDATE on PostgreSQL."""
    del principal  # runs belong to the coalition: every role allowed on the route sees every run
    stmt = select(AllocationRun).where(AllocationRun.id == run_id)
    if lock:
        stmt = stmt.with_for_update()
    run = session.exec(stmt).first()
    if run is None:
        raise NotFound(f"allocation run {run_id} not found")
    return run


def get_run_summary(session: Session, *, run_id: int) -> AllocationRun | None:
    """The run without its snapshot (cheap; for progress polling)."""
    return session.exec(runs_without_problem().where(AllocationRun.id == run_id)).first()


def list_runs(
    session: Session, *, principal: Principal, limit: int, cursor: str | None, status: str | None = None
) -> Page[AllocationRun]:
    del principal
    stmt = runs_without_problem()
    if status is not None:
        stmt = stmt.where(AllocationRun.status == status)
    return paginate(session, stmt, AllocationRun.id, limit=limit, cursor=cursor)


def plan_ids(session: Session, run_ids: Sequence[int]) -> dict[int, int]:
    """Run id → its plan's id, for runs that have one."""
    if not run_ids:
        return {}
    rows = session.exec(select(Plan.run_id, Plan.id).where(col(Plan.run_id).in_(list(run_ids)))).all()
    return {run_id: plan_id for run_id, plan_id in rows if plan_id is not None}


def to_public(run: AllocationRun, plan_id: int | None) -> RunPublic:
    return RunPublic(
        id=run.id or 0,
        status=run.status,  # type: ignore[arg-type]
        scope=RunScope(regions=run.scope_regions, item_ids=run.scope_item_ids),
        settings=run.settings,
        time_limit_s=run.time_limit_s,
        progress=RunProgress(stage=run.progress_stage, percent=run.progress_percent, message=run.progress_message),
        solver_stats=run.solver_stats,
        error=run.error,
        attempts=run.attempts,
        worker_id=run.worker_id,
        cancel_requested=run.cancel_requested,
        plan_id=plan_id,
        version=run.version,
        created_at=run.created_at,
        started_at=run.started_at,
        heartbeat_at=run.heartbeat_at,
        finished_at=run.finished_at,
        updated_at=run.updated_at,
    )


def public_run(session: Session, run: AllocationRun) -> RunPublic:
    return to_public(run, plan_ids(session, [run.id or 0]).get(run.id or 0))


def scopes_overlap(
    regions_a: Sequence[str], items_a: Sequence[int], regions_b: Sequence[str], items_b: Sequence[int]
) -> bool:
    """True when the scopes share a (region, item) pair; an empty list means all."""
    regions_meet = not regions_a or not regions_b or bool(set(regions_a) & set(regions_b))
    items_meet = not items_a or not items_b or bool(set(items_a) & set(items_b))
    return regions_meet and items_meet


def _lock_scopes(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCOPE_LOCK_KEY})


def _overlapping_run(session: Session, regions: Sequence[str], item_ids: Sequence[int]) -> AllocationRun | None:
    active = session.exec(
        runs_without_problem().where(col(AllocationRun.status).in_(ACTIVE_RUN_STATUSES)).order_by(col(AllocationRun.id))
    ).all()
    for run in active:
        if scopes_overlap(regions, item_ids, run.scope_regions, run.scope_item_ids):
            return run
    return None


def touch(run: AllocationRun, now: datetime | None = None) -> None:
    """Every visible change bumps the version (progress streams and ETags key on it)."""
    run.version += 1
    run.updated_at = now or utcnow()


def create_run(session: Session, *, actor: Principal, data: RunCreate) -> AllocationRun:
    """Validate the scope, refuse an overlapping one (409), snapshot the problem and queue the run."""
    for i, item_id in enumerate(data.scope.item_ids):
        items.get_for_reference(session, item_id, field=f"scope.item_ids[{i}]")
    regions = sorted(set(data.scope.regions))
    item_ids = sorted(set(data.scope.item_ids))

    _lock_scopes(session)
    conflicting = _overlapping_run(session, regions, item_ids)
    if conflicting is not None:
        raise Conflict(
            f"scope overlaps allocation run {conflicting.id} ({conflicting.status}); "
            "wait for it to finish or cancel it",
            extra={"conflicting_run_id": conflicting.id},
        )

    now = utcnow()
    settings = snapshot.effective_settings(data.settings.model_dump())
    problem = snapshot.build_problem(session, now=now, regions=regions, item_ids=item_ids, settings=settings)
    run = AllocationRun(
        status="queued",
        scope_regions=regions,
        scope_item_ids=item_ids,
        settings=settings,
        time_limit_s=settings["time_limit_s"],
        problem=problem,
        progress_stage="queued",
        progress_percent=0.0,
        progress_message=snapshot.summary(problem),
        created_by_key_id=actor.key_id,
        created_at=now,
        updated_at=now,
    )
    session.add(run)
    session.flush()
    audit.record(session, actor=actor, action="allocation_run.create", obj=run, before=None, exclude=AUDIT_EXCLUDE)
    return run


def cancel_run(session: Session, *, actor: Principal, run_id: int) -> AllocationRun:
    """Queued → cancelled at once; running → cancel requested (the worker stops and cancels it);
    finished → 409."""
    run = get_run(session, principal=actor, run_id=run_id, lock=True)
    if run.status in TERMINAL_STATUSES:
        raise Conflict(f"allocation run {run_id} has already finished ({run.status})")
    if run.status == "running" and run.cancel_requested:
        return run
    before = audit.snapshot(run, exclude=AUDIT_EXCLUDE)
    now = utcnow()
    if run.status == "queued":
        run.status = "cancelled"
        run.finished_at = now
        run.progress_stage = "cancelled"
        run.progress_message = "cancelled before a worker started it"
    else:
        run.cancel_requested = True
        run.progress_message = "cancel requested; the worker stops at its next check"
    touch(run, now)
    session.add(run)
    session.flush()
    audit.record(session, actor=actor, action="allocation_run.cancel", obj=run, before=before, exclude=AUDIT_EXCLUDE)
    return run
