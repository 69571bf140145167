"""The greedy baseline stored with each plan: computed beside the solve in a forked helper for big
snapshots, after it for small ones; the same KPIs either way, in the same transaction as the plan.

The size threshold is lowered here so a small world takes the forked path; the greedy function is
wrapped only to record which process ran it (the real baseline still runs)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import select

from app.allocation import baseline, snapshot, worker
from app.allocation.models import AllocationRun, Plan
from app.db import transaction
from optimizer.parallel import default_workers
from tests.factories import Factory
from tests.runs_world import SmallWorld, stocked_small_world


@pytest.fixture
def world(engine: Engine) -> SmallWorld:
    return stocked_small_world(engine)


@pytest.fixture
def logistics(factory: Factory) -> dict[str, str]:
    return factory.actor("logistics").headers


def _solve_run(client: TestClient, headers: dict[str, str], engine: Engine) -> tuple[str | None, AllocationRun]:
    r = client.post("/v1/allocation-runs", json={}, headers=headers)
    assert r.status_code == 202, r.text
    run_id = int(r.json()["id"])
    assert worker.claim_next(engine, "w1") == run_id
    status = worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05)
    with transaction(engine) as session:
        run = session.get(AllocationRun, run_id)
        assert run is not None
        return status, run


def _plan(engine: Engine, run_id: int) -> Plan | None:
    with transaction(engine) as session:
        return session.exec(select(Plan).where(Plan.run_id == run_id)).first()


def _record_pid(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    real = baseline.greedy_kpis

    def greedy_noting_its_process(problem: Any) -> dict[str, Any]:
        # A forked helper's memory is its own: it tells the test through a file (process, niceness).
        where.write_text(f"{os.getpid()} {os.nice(0)}")
        return real(problem)

    monkeypatch.setattr(baseline, "greedy_kpis", greedy_noting_its_process)


@pytest.mark.parametrize("beside", [True, False], ids=["forked-beside", "after"])
def test_the_baseline_is_the_greedy_plans_kpis_on_the_runs_snapshot(
    client: TestClient,
    logistics: dict[str, str],
    engine: Engine,
    world: SmallWorld,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    beside: bool,
) -> None:
    if beside and default_workers() < 2:
        pytest.skip("one core: the baseline is always computed after the solve")
    monkeypatch.setattr(baseline, "BESIDE_MIN_DEMANDS", 1 if beside else 10_000)
    _record_pid(monkeypatch, tmp_path / "pid")
    status, run = _solve_run(client, logistics, engine)
    assert status == "succeeded"
    ran_in, niceness = map(int, (tmp_path / "pid").read_text().split())
    assert (ran_in != os.getpid()) is beside
    # Beside the solve it yields the cores to it; after the solve the worker keeps its own priority.
    assert niceness == (min(19, os.nice(0) + baseline.HELPER_NICE) if beside else os.nice(0))
    plan = _plan(engine, run.id or 0)
    assert plan is not None and run.problem is not None
    assert plan.baseline_kpis == baseline.greedy_kpis(snapshot.load_snapshot(run.problem))
    assert run.solver_stats is not None and run.solver_stats["baseline_wall_s"] >= 0
    assert run.solver_stats["store_wall_s"] >= 0  # storing the plan, timed in the final transaction
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("beside", [True, False], ids=["forked-beside", "after"])
def test_a_failing_baseline_leaves_the_plan_without_a_comparison(
    client: TestClient,
    logistics: dict[str, str],
    engine: Engine,
    world: SmallWorld,
    monkeypatch: pytest.MonkeyPatch,
    beside: bool,
) -> None:
    def broken(problem: Any) -> dict[str, Any]:
        raise MemoryError("no room for the baseline")

    monkeypatch.setattr(baseline, "BESIDE_MIN_DEMANDS", 1 if beside else 10_000)
    monkeypatch.setattr(baseline, "greedy_kpis", broken)
    status, run = _solve_run(client, logistics, engine)
    assert status == "succeeded" and run.error is None
    plan = _plan(engine, run.id or 0)
    assert plan is not None and plan.baseline_kpis is None and plan.kpis
    assert multiprocessing.active_children() == []


def test_a_solver_error_beside_the_baseline_fails_the_run_and_stops_the_helper(
    client: TestClient,
    logistics: dict[str, str],
    engine: Engine,
    world: SmallWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_plan(problem: Any, time_limit_s: float) -> dict[str, Any]:
        raise TimeoutError("time limit reached without a feasible plan")

    monkeypatch.setattr(baseline, "BESIDE_MIN_DEMANDS", 1)
    monkeypatch.setattr(worker, "solve_problem", no_plan)
    status, run = _solve_run(client, logistics, engine)
    assert status == "failed" and run.error == "TimeoutError: time limit reached without a feasible plan"
    assert _plan(engine, run.id or 0) is None
    assert multiprocessing.active_children() == []
