"""The allocation worker: claims queued runs, solves them, stores the plan, recovers stalled runs.

Any number of workers (processes, machines) may run against one PostgreSQL database: a claim is
`SELECT … FOR UPDATE SKIP LOCKED` plus the update to `running` in one short transaction, so each run
is claimed exactly once. On SQLite every transaction starts with BEGIN IMMEDIATE, which serializes
claims the same way. No transaction is held open while solving: the heartbeat thread writes in
short transactions, and the plan is stored together with `succeeded` in one final transaction, and
only if this worker still owns the run (it may have been re-queued or failed meanwhile).

Test-only hook: when the environment variable CRISIS_TEST_SOLVE_PAUSE_FILE names a file, the worker,
after claiming a run and starting its heartbeat and before solving, creates that file and waits until
it is removed (at most 120 s). Tests use it to kill a worker provably mid-solve. Never set it in
production.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import col

from app.allocation import snapshot
from app.allocation.baseline import solve_with_baseline
from app.allocation.models import AllocationRun
from app.allocation.progress import Heartbeat, Owner, db_now, lock_run
from app.allocation.runs_service import AUDIT_EXCLUDE, runs_without_problem, touch
from app.audit import service as audit
from app.db import transaction, utcnow
from app.principal import SYSTEM
from optimizer.model import Problem

log = logging.getLogger("app.worker")

HEARTBEAT_INTERVAL_S = 2.0
STALE_AFTER_S = 20.0
POLL_INTERVAL_S = 1.0
MAX_ATTEMPTS = 2  # a run whose worker stops heartbeating is re-queued once, then failed
PAUSE_FILE_ENV = "CRISIS_TEST_SOLVE_PAUSE_FILE"
PAUSE_MAX_S = 120.0
STALLED_REASON = "worker stopped heartbeating"


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------------------ solving


def solve_problem(problem: Problem, time_limit_s: float) -> dict[str, Any]:
    """The optimizer's plan as Plan JSON (a seam tests may replace)."""
    import optimizer
    from optimizer.io import plan_to_dict

    return plan_to_dict(optimizer.solve(problem, time_limit_s=time_limit_s))


def store_plan(session: Any, run: AllocationRun, plan: dict[str, Any], baseline: dict[str, Any] | None) -> Any:
    from app.allocation.plans_service import create_plan

    return create_plan(session, run=run, plan=plan, baseline_kpis=baseline)


# ------------------------------------------------------------------------------------ claim


def claim_next(engine: Engine, worker_id: str) -> int | None:
    """Claim the oldest queued run for this worker (running, heartbeat now, attempts + 1)."""
    with transaction(engine) as session:
        stmt = runs_without_problem().where(AllocationRun.status == "queued").order_by(col(AllocationRun.id)).limit(1)
        stmt = stmt.with_for_update(skip_locked=True)  # ignored by SQLite, whose BEGIN IMMEDIATE serializes
        run = session.exec(stmt).first()
        if run is None:
            return None
        now = db_now(session)
        run.status = "running"
        run.worker_id = worker_id
        run.attempts += 1
        run.heartbeat_at = now
        run.started_at = now
        run.progress_stage, run.progress_percent = "claimed", 2.0
        run.progress_message = f"claimed by worker {worker_id} (attempt {run.attempts})"
        touch(run, now)
        session.add(run)
        return run.id


# ------------------------------------------------------------------------------------ process


@dataclass(frozen=True)
class _Loaded:
    owner: Owner
    problem: dict[str, Any]
    time_limit_s: float


def _load(engine: Engine, run_id: int, worker_id: str) -> _Loaded | None:
    with transaction(engine) as session:
        run = session.get(AllocationRun, run_id)
        if run is None or run.status != "running" or run.worker_id != worker_id:
            return None
        return _Loaded(Owner(worker_id, run.attempts), dict(run.problem or {}), run.time_limit_s)


def _finish(
    engine: Engine,
    run_id: int,
    owner: Owner,
    status: str,
    *,
    error: str | None = None,
    stage: str | None = None,
    message: str | None = None,
    stats: dict[str, Any] | None = None,
) -> bool:
    """Mark the run finished if this worker still owns it; False when it no longer does."""
    with transaction(engine) as session:
        run = lock_run(session, run_id)
        if not owner.holds(run):
            return False
        assert run is not None
        _mark(session, run, status, error=error, stage=stage, message=message, stats=stats)
        return True


def _mark(
    session: Any,
    run: AllocationRun,
    status: str,
    *,
    error: str | None = None,
    stage: str | None = None,
    message: str | None = None,
    stats: dict[str, Any] | None = None,
) -> None:
    before = audit.snapshot(run, exclude=AUDIT_EXCLUDE)
    now = utcnow()
    run.status = status
    run.error = error
    run.finished_at = now
    run.progress_stage = stage or status
    run.progress_message = (message or error or status)[:500]  # the column is VARCHAR(500)
    if status == "succeeded":
        run.progress_percent = 100.0
    if stats is not None:
        run.solver_stats = stats
    touch(run, now)
    session.add(run)
    session.flush()
    audit.record(
        session, actor=SYSTEM, action=f"allocation_run.{status}", obj=run, before=before, exclude=AUDIT_EXCLUDE
    )


def _pause_for_tests(beat: Heartbeat, run_id: int) -> None:
    path = os.environ.get(PAUSE_FILE_ENV)
    if not path:
        return
    beat.report("paused", 5.0, "paused by the test-only solve hook")
    Path(path).write_text(str(run_id))
    deadline = time.monotonic() + PAUSE_MAX_S
    while Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _solver_stats(
    plan: dict[str, Any],
    problem: Problem,
    *,
    time_limit_s: float,
    worker_id: str,
    baseline_wall_s: float,
    started: float,
) -> dict[str, Any]:
    solver = plan.get("solver") or {}
    return {
        "status": plan.get("status"),
        "wall_s": solver.get("wall_s"),
        "stages": solver.get("stages", []),
        "time_limit_s": time_limit_s,
        "sources": len(problem.sources),
        "demands": len(problem.demands),
        "allocations": len(plan.get("allocations", [])),
        "baseline_wall_s": round(baseline_wall_s, 4),
        "worker_wall_s": round(time.monotonic() - started, 4),
        "worker_id": worker_id,
    }


def process_run(
    engine: Engine, run_id: int, worker_id: str, *, heartbeat_interval: float = HEARTBEAT_INTERVAL_S
) -> str | None:
    """Solve a run this worker has claimed. Returns its final status, or None when the run was no
    longer this worker's to finish (re-queued, failed or cancelled by someone else meanwhile)."""
    started = time.monotonic()
    loaded = _load(engine, run_id, worker_id)
    if loaded is None:
        return None
    owner = loaded.owner
    with Heartbeat(engine, run_id, owner, interval_s=heartbeat_interval, time_limit_s=loaded.time_limit_s) as beat:
        try:
            _pause_for_tests(beat, run_id)
            if beat.cancel_requested:
                ok = _finish(engine, run_id, owner, "cancelled", message="cancelled before solving")
                return "cancelled" if ok else None
            beat.report("validating", 5.0, snapshot.summary(loaded.problem))
            problem = snapshot.load_snapshot(loaded.problem)
            beat.report("solving", 10.0, "solving", solving=True)
            # The greedy baseline is computed beside the solve for big snapshots (app.allocation.baseline).
            plan, baseline_kpis, baseline_wall_s = solve_with_baseline(
                problem,
                loaded.time_limit_s,
                solve=solve_problem,  # looked up here, so tests may replace the seam
                run_id=run_id,
                after_solve=lambda: beat.report("baseline", 92.0, "computing the greedy baseline for comparison"),
            )
            beat.report("saving", 95.0, "storing the plan")
        except Exception as exc:  # noqa: BLE001  (any failure fails the run with its reason, never a partial plan)
            return _fail(engine, run_id, owner, exc)
    if beat.lost:
        return None
    stats = _solver_stats(
        plan,
        problem,
        time_limit_s=loaded.time_limit_s,
        worker_id=worker_id,
        baseline_wall_s=baseline_wall_s,
        started=started,
    )
    try:
        return _succeed(engine, run_id, owner, plan, baseline_kpis, stats)
    except Exception as exc:  # noqa: BLE001
        return _fail(engine, run_id, owner, exc)


def _succeed(
    engine: Engine,
    run_id: int,
    owner: Owner,
    plan: dict[str, Any],
    baseline: dict[str, Any] | None,
    stats: dict[str, Any],
) -> str | None:
    """One transaction: plan stored and run succeeded together, or nothing (cancel wins over the plan)."""
    with transaction(engine) as session:
        run = lock_run(session, run_id)
        if not owner.holds(run):
            return None
        assert run is not None
        if run.cancel_requested:
            _mark(session, run, "cancelled", message="cancelled while solving; the plan was discarded", stats=stats)
            return "cancelled"
        stored_at = time.monotonic()
        store_plan(session, run, plan, baseline)
        stats = {**stats, "store_wall_s": round(time.monotonic() - stored_at, 4)}
        status_note = " (time limit reached; best plan found)" if plan.get("status") == "time_limit" else ""
        _mark(session, run, "succeeded", stage="done", message=f"plan ready{status_note}", stats=stats)
        return "succeeded"


def _fail(engine: Engine, run_id: int, owner: Owner, exc: BaseException) -> str | None:
    from optimizer.io import ProblemError

    if isinstance(exc, ProblemError):
        reason = f"invalid snapshot: {exc}"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.exception("run %s failed", run_id, exc_info=exc)
    return "failed" if _finish(engine, run_id, owner, "failed", error=reason[:2000]) else None


# ------------------------------------------------------------------------------------ recovery


def recover_stalled(engine: Engine, stale_after_s: float = STALE_AFTER_S) -> list[tuple[int, str]]:
    """Runs `running` whose heartbeat is older than the threshold: re-queued once (attempts < 2),
    otherwise failed with "worker stopped heartbeating"; a cancel request turns into cancelled."""
    changed: list[tuple[int, str]] = []
    with transaction(engine) as session:
        threshold = db_now(session) - timedelta(seconds=stale_after_s)
        stmt = (
            runs_without_problem()
            .where(AllocationRun.status == "running")
            .where(or_(col(AllocationRun.heartbeat_at).is_(None), col(AllocationRun.heartbeat_at) < threshold))
            .order_by(col(AllocationRun.id))
            .with_for_update(skip_locked=True)
        )
        for run in session.exec(stmt).all():
            gone = run.worker_id
            if run.cancel_requested:
                _mark(session, run, "cancelled", message=f"cancelled; worker {gone} stopped heartbeating")
            elif run.attempts < MAX_ATTEMPTS:
                before = audit.snapshot(run, exclude=AUDIT_EXCLUDE)
                run.status, run.worker_id, run.heartbeat_at = "queued", None, None
                run.progress_stage, run.progress_percent = "queued", 0.0
                run.progress_message = f"re-queued: worker {gone} stopped heartbeating"
                touch(run)
                session.add(run)
                session.flush()
                audit.record(
                    session,
                    actor=SYSTEM,
                    action="allocation_run.requeue",
                    obj=run,
                    before=before,
                    exclude=AUDIT_EXCLUDE,
                )
            else:
                _mark(session, run, "failed", error=f"{STALLED_REASON} (worker {gone}, attempt {run.attempts})")
            changed.append((run.id or 0, run.status))
    for run_id, status in changed:
        log.warning("stalled run %s → %s", run_id, status)
    return changed


# ------------------------------------------------------------------------------------ loop


def run_worker(
    engine: Engine,
    *,
    worker_id: str,
    poll_interval: float = POLL_INTERVAL_S,
    stop_event: threading.Event | None = None,
    once: bool = False,
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
    stale_after_s: float = STALE_AFTER_S,
) -> int:
    """Loop: recover stalled runs, claim the next queued run, solve it; sleep when idle.

    `once`: one pass — recover, then process queued runs until none is left, then return.
    Returns the number of runs processed. A set `stop_event` ends the loop after the current run.
    """
    stop = stop_event or threading.Event()
    processed = 0
    log.info("worker %s started", worker_id)
    while not stop.is_set():
        try:
            recover_stalled(engine, stale_after_s)
            run_id = claim_next(engine, worker_id)
        except Exception:  # noqa: BLE001  (database briefly unreachable: retry after a pause)
            log.exception("worker %s could not poll the queue", worker_id)
            run_id = None
            if once:
                raise
        if run_id is not None:
            processed += 1
            try:
                status = process_run(engine, run_id, worker_id, heartbeat_interval=heartbeat_interval)
                log.info("run %s → %s", run_id, status or "no longer this worker's")
            except Exception:  # noqa: BLE001  (e.g. the database went away; recovery re-queues the run)
                log.exception("run %s could not be finished by worker %s", run_id, worker_id)
                if once:
                    raise
                stop.wait(poll_interval)
            continue
        if once:
            break
        stop.wait(poll_interval)
    log.info("worker %s stopped after %d runs", worker_id, processed)
    return processed
