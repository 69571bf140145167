"""The worker, called in-process: claim, solve, store the plan, fail cleanly, recover stalled runs;
progress over Server-Sent Events; the test-only pause hook; the embedded child worker."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import select

from app.allocation import embedded, worker
from app.allocation.models import AllocationRun, Plan, PlanLine
from app.config import Settings
from app.db import make_engine, transaction, utcnow
from tests.factories import Factory
from tests.runs_world import SmallWorld, stocked_small_world


@pytest.fixture
def world(engine: Engine) -> SmallWorld:
    return stocked_small_world(engine)


@pytest.fixture
def logistics(factory: Factory) -> dict[str, str]:
    return factory.actor("logistics").headers


def _trigger(client: TestClient, headers: dict[str, str], **body: Any) -> int:
    r = client.post("/v1/allocation-runs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def _run(engine: Engine, run_id: int) -> AllocationRun:
    with transaction(engine) as session:
        run = session.get(AllocationRun, run_id)
        assert run is not None
        return run


def _update(engine: Engine, run_id: int, **changes: Any) -> None:
    with transaction(engine) as session:
        run = session.get(AllocationRun, run_id)
        assert run is not None
        for key, value in changes.items():
            setattr(run, key, value)
        session.add(run)


def _plans(engine: Engine) -> list[Plan]:
    with transaction(engine) as session:
        return list(session.exec(select(Plan)).all())


def test_claims_are_oldest_first_and_exclusive(client: TestClient, logistics: dict[str, str], engine: Engine) -> None:
    first = _trigger(client, logistics, scope={"regions": ["a"]})
    second = _trigger(client, logistics, scope={"regions": ["b"]})
    assert worker.claim_next(engine, "w1") == first
    assert worker.claim_next(engine, "w2") == second
    assert worker.claim_next(engine, "w3") is None
    run = _run(engine, first)
    assert (run.status, run.worker_id, run.attempts) == ("running", "w1", 1)
    assert run.started_at is not None and run.heartbeat_at is not None


def test_concurrent_claims_take_each_run_once(client: TestClient, logistics: dict[str, str], engine: Engine) -> None:
    ids = {_trigger(client, logistics, scope={"regions": [f"r{i}"]}) for i in range(6)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        while (run_id := worker.claim_next(engine, name)) is not None:
            with lock:
                claimed.append(run_id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_process_run_stores_the_plan_and_succeeds(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld
) -> None:
    run_id = _trigger(client, logistics, settings={"time_limit_s": 30})
    assert worker.claim_next(engine, "w1") == run_id
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "succeeded"

    body = client.get(f"/v1/allocation-runs/{run_id}", headers=logistics).json()
    assert body["status"] == "succeeded" and body["error"] is None
    assert body["progress"] == {"stage": "done", "percent": 100.0, "message": "plan ready"}
    stats = body["solver_stats"]
    assert stats["status"] == "optimal" and stats["demands"] == 2 and stats["sources"] == 2
    assert stats["time_limit_s"] == 30 and stats["worker_id"] == "w1"
    [plan] = _plans(engine)
    assert body["plan_id"] == plan.id and plan.run_id == run_id and plan.state == "proposed"
    assert plan.baseline_kpis is not None and "by_priority" in plan.baseline_kpis
    with transaction(engine) as session:
        lines = session.exec(select(PlanLine).where(PlanLine.plan_id == plan.id)).all()
    # 90 units of supply (60 N95 + 30 KN95) for 100 requested: all of it is allocated, critical first.
    assert sum(line.quantity for line in lines) == 90
    by_demand = {d["id"]: d for d in plan.demands}
    assert sum(d["allocated"] for d in by_demand.values()) == 90
    assert max(d["fill_rate"] for d in by_demand.values()) == 1.0


def test_a_corrupt_snapshot_fails_the_run_with_a_reason_and_no_plan(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld
) -> None:
    run_id = _trigger(client, logistics)
    problem = _run(engine, run_id).problem
    assert problem is not None
    problem["demands"][0]["quantity"] = -5
    _update(engine, run_id, problem=problem)
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "failed"
    run = _run(engine, run_id)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error is not None and run.error.startswith("invalid snapshot: demands[0].quantity")
    assert _plans(engine) == []


def test_a_failure_while_storing_leaves_no_partial_plan(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = worker.store_plan

    def store_then_break(session: Any, run: Any, plan: Any, baseline: Any) -> Any:
        real_store(session, run, plan, baseline)
        session.flush()  # the plan and its lines are written inside the transaction …
        raise RuntimeError("disk full")  # … which then fails

    monkeypatch.setattr(worker, "store_plan", store_then_break)
    run_id = _trigger(client, logistics)
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "failed"
    assert _run(engine, run_id).error == "RuntimeError: disk full"
    assert _plans(engine) == []
    with transaction(engine) as session:
        assert session.exec(select(PlanLine)).all() == []


def test_time_limit_is_passed_to_the_solver_and_a_time_limit_plan_succeeds(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_solve = worker.solve_problem
    limits: list[float] = []

    def solve_hitting_the_limit(problem: Any, time_limit_s: float) -> dict[str, Any]:
        limits.append(time_limit_s)
        return {**real_solve(problem, time_limit_s), "status": "time_limit"}

    monkeypatch.setattr(worker, "solve_problem", solve_hitting_the_limit)
    run_id = _trigger(client, logistics, settings={"time_limit_s": 2.5})
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "succeeded"
    assert limits == [2.5]
    run = _run(engine, run_id)
    assert run.solver_stats is not None and run.solver_stats["status"] == "time_limit"
    assert "time limit reached" in (run.progress_message or "")
    assert [p.solver_status for p in _plans(engine)] == ["time_limit"]


def test_solver_error_fails_the_run(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_plan(problem: Any, time_limit_s: float) -> dict[str, Any]:
        raise TimeoutError("time limit reached without a feasible plan")

    monkeypatch.setattr(worker, "solve_problem", no_plan)
    run_id = _trigger(client, logistics)
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "failed"
    assert _run(engine, run_id).error == "TimeoutError: time limit reached without a feasible plan"
    assert _plans(engine) == []


def test_heartbeat_and_progress_advance_while_solving(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_solve = worker.solve_problem
    seen: list[AllocationRun] = []

    def slow_solve(problem: Any, time_limit_s: float) -> dict[str, Any]:
        for _ in range(3):
            time.sleep(0.15)
            seen.append(_run(engine, run_id))
        return real_solve(problem, time_limit_s)

    monkeypatch.setattr(worker, "solve_problem", slow_solve)
    run_id = _trigger(client, logistics, settings={"time_limit_s": 1})
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "succeeded"
    assert all(r.progress_stage == "solving" and r.status == "running" for r in seen)
    beats = [r.heartbeat_at for r in seen]
    assert beats[0] is not None and beats[0] < beats[-1]  # type: ignore[operator]
    assert seen[0].progress_percent < seen[-1].progress_percent <= 90


def test_cancel_while_solving_discards_the_plan(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_solve = worker.solve_problem

    def solve_and_get_cancelled(problem: Any, time_limit_s: float) -> dict[str, Any]:
        r = client.post(f"/v1/allocation-runs/{run_id}/cancel", headers=logistics)
        assert r.status_code == 202
        return real_solve(problem, time_limit_s)

    monkeypatch.setattr(worker, "solve_problem", solve_and_get_cancelled)
    run_id = _trigger(client, logistics)
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "cancelled"
    assert _run(engine, run_id).status == "cancelled"
    assert _plans(engine) == []


def test_stalled_runs_are_requeued_once_then_failed(
    client: TestClient, logistics: dict[str, str], engine: Engine
) -> None:
    run_id = _trigger(client, logistics, scope={"regions": ["north"]})
    alive = _trigger(client, logistics, scope={"regions": ["south"]})
    assert worker.claim_next(engine, "w1") == run_id
    assert worker.claim_next(engine, "w-alive") == alive
    _update(engine, run_id, heartbeat_at=utcnow() - timedelta(seconds=120))
    assert worker.recover_stalled(engine, stale_after_s=30) == [(run_id, "queued")]
    run = _run(engine, run_id)
    assert (run.status, run.worker_id, run.attempts) == ("queued", None, 1)
    assert "stopped heartbeating" in (run.progress_message or "")

    assert worker.claim_next(engine, "w2") == run_id
    assert _run(engine, run_id).attempts == 2
    assert worker.recover_stalled(engine, stale_after_s=30) == []  # w2 is alive
    _update(engine, run_id, heartbeat_at=utcnow() - timedelta(seconds=120))
    assert worker.recover_stalled(engine, stale_after_s=30) == [(run_id, "failed")]
    run = _run(engine, run_id)
    assert run.status == "failed" and run.error is not None and run.error.startswith("worker stopped heartbeating")
    assert _run(engine, alive).status == "running"  # a live heartbeat is left alone


def test_a_worker_that_lost_its_run_writes_nothing(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_solve = worker.solve_problem

    def stall_then_finish(problem: Any, time_limit_s: float) -> dict[str, Any]:
        # While w1 "hangs", recovery hands the run to w2.
        _update(engine, run_id, heartbeat_at=utcnow() - timedelta(seconds=120))
        worker.recover_stalled(engine, stale_after_s=30)
        assert worker.claim_next(engine, "w2") == run_id
        return real_solve(problem, time_limit_s)

    monkeypatch.setattr(worker, "solve_problem", stall_then_finish)
    run_id = _trigger(client, logistics)
    worker.claim_next(engine, "w1")
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=10) is None
    run = _run(engine, run_id)
    assert (run.status, run.worker_id, run.attempts) == ("running", "w2", 2)
    assert _plans(engine) == []


def test_run_worker_once_drains_the_queue(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld
) -> None:
    ids = [_trigger(client, logistics, scope={"regions": [r]}) for r in ("north", "south")]
    assert worker.run_worker(engine, worker_id="w1", once=True, heartbeat_interval=0.05) == 2
    assert [_run(engine, i).status for i in ids] == ["succeeded", "succeeded"]
    assert sorted(p.run_id for p in _plans(engine)) == ids


def _events(lines: Any) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind is not None:
            out.append((kind, json.loads(line.removeprefix("data: "))))
            kind = None
    return out


def test_events_stream_progress_until_the_run_ends(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_solve = worker.solve_problem

    def visible_solve(problem: Any, time_limit_s: float) -> dict[str, Any]:
        time.sleep(1.2)  # long enough for the stream's 0.5 s polls to see the run solving
        return real_solve(problem, time_limit_s)

    monkeypatch.setattr(worker, "solve_problem", visible_solve)
    run_id = _trigger(client, logistics)
    background = threading.Thread(
        target=lambda: (time.sleep(0.3), worker.run_worker(engine, worker_id="w1", once=True, heartbeat_interval=0.05))
    )
    background.start()
    with client.stream("GET", f"/v1/allocation-runs/{run_id}/events", headers=logistics) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
    background.join()
    kinds = [k for k, _ in events]
    assert kinds[0] == "progress" and events[0][1]["status"] == "queued"
    assert kinds[-1] == "end" and events[-1][1]["status"] == "succeeded" and events[-1][1]["plan_id"]
    assert ("running", "solving") in {(e["status"], e["progress"]["stage"]) for _, e in events}
    versions = [e["version"] for _, e in events[:-1]]
    assert versions == sorted(set(versions))  # each state once, in order


def test_events_of_a_finished_run_honour_last_event_id(
    client: TestClient, logistics: dict[str, str], engine: Engine
) -> None:
    run_id = _trigger(client, logistics)
    client.post(f"/v1/allocation-runs/{run_id}/cancel", headers=logistics)
    version = _run(engine, run_id).version
    with client.stream("GET", f"/v1/allocation-runs/{run_id}/events", headers=logistics) as r:
        assert [k for k, _ in _events(r.iter_lines())] == ["progress", "end"]
    seen = {**logistics, "Last-Event-ID": str(version)}
    with client.stream("GET", f"/v1/allocation-runs/{run_id}/events", headers=seen) as r:
        assert [k for k, _ in _events(r.iter_lines())] == ["end"]
    assert client.get("/v1/allocation-runs/424242/events", headers=logistics).status_code == 404


def test_pause_hook_holds_the_worker_mid_solve(
    client: TestClient,
    logistics: dict[str, str],
    engine: Engine,
    world: SmallWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pause = tmp_path / "paused"
    monkeypatch.setenv(worker.PAUSE_FILE_ENV, str(pause))
    run_id = _trigger(client, logistics)
    worker.claim_next(engine, "w1")
    result: list[str | None] = []
    t = threading.Thread(
        target=lambda: result.append(worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05))
    )
    t.start()
    deadline = time.monotonic() + 10
    while not pause.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pause.read_text() == str(run_id)
    time.sleep(0.2)
    run = _run(engine, run_id)
    assert (run.status, run.progress_stage) == ("running", "paused")
    assert _plans(engine) == []
    pause.unlink()
    t.join(timeout=30)
    assert result == ["succeeded"]


def test_embedded_worker_is_wanted_only_for_the_configured_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite = make_engine(f"sqlite:///{db}")
    other = make_engine(f"sqlite:///{tmp_path / 'y.db'}")
    pg = make_engine("postgresql://u@localhost/x")
    configured = Settings(database_url=f"sqlite:///{db}")
    assert embedded.wanted(configured, sqlite)
    assert not embedded.wanted(configured, other)  # an app around an injected engine (tests)
    assert not embedded.wanted(Settings(database_url="postgresql://u@localhost/x"), pg)  # run real workers
    assert not embedded.wanted(configured.model_copy(update={"embedded_worker": "off"}), sqlite)
    assert embedded.wanted(configured.model_copy(update={"embedded_worker": "on"}), pg)


def test_embedded_child_worker_solves_a_run(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISIS_WORKER_POLL_S", "0.1")
    run_id = _trigger(client, logistics)
    child = embedded.start_embedded_worker(Settings(embedded_worker="on"), engine)
    assert child is not None
    try:
        deadline = time.monotonic() + 60
        while _run(engine, run_id).status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
        run = _run(engine, run_id)
        assert run.status == "succeeded", run.error
        assert run.worker_id and run.worker_id.endswith(f":{child.process.pid}")  # type: ignore[union-attr]
    finally:
        child.stop()
    assert child.process is not None and child.process.poll() is not None


def test_a_real_solve_past_its_time_limit_succeeds_as_time_limit_and_frees_the_worker(
    client: TestClient, logistics: dict[str, str], engine: Engine, world: SmallWorld
) -> None:
    """SPEC §2: a run that reaches its time limit with a feasible plan succeeds with status time_limit.
    The real solver, with a limit it cannot meet, must still hand back a plan, and the worker moves on."""
    run_id = _trigger(client, logistics, settings={"time_limit_s": 1e-6})
    assert worker.claim_next(engine, "w1") == run_id
    assert worker.process_run(engine, run_id, "w1", heartbeat_interval=0.05) == "succeeded"
    run = _run(engine, run_id)
    assert run.status == "succeeded" and run.solver_stats is not None
    assert run.solver_stats["status"] == "time_limit"
    assert [p.solver_status for p in _plans(engine)] == ["time_limit"]
    follow_up = _trigger(client, logistics)
    assert worker.claim_next(engine, "w1") == follow_up
