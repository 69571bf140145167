"""Concurrency and faults with real processes on PostgreSQL (issue 4, item 6).

Two `uvicorn` API processes and two `crisis-supply worker` processes run against a fresh database;
real HTTP clients (httpx, one per thread) spread their requests over both API ports. Each test builds
its own small scenario under fresh region names and SKUs, so scopes never meet across tests.
PostgreSQL only: without TEST_DATABASE_URL the tests are skipped (they fail with REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import col, select

from app.allocation.models import AllocationRun, Plan
from app.db import make_engine, transaction
from app.requests.models import RequestLine
from app.shipments.feed import decode_cursor
from app.shipments.models import Shipment
from tests.cluster_world import (
    API_ENV,
    WORKER_ENV,
    Cluster,
    Seed,
    approve_call,
    at_once,
    audit_count,
    get_plan,
    ledger,
    run_and_wait,
    trigger,
    wait_for_runs,
    worker_identity,
)
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.factories import Factory
from tests.procs import Proc, Processes

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster(pg_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from app.migrate import upgrade

    url = _create_pg_database(pg_base_url)
    engine = make_engine(url)
    try:
        upgrade(url)
        factory = Factory(engine)
        actors = factory.actor("logistics"), factory.actor("admin"), factory.actor("driver")
        with Processes(url, tmp_path_factory.mktemp("procs"), env=API_ENV) as procs:
            apis = procs.start_apis(2)
            c = Cluster(engine, procs, apis, [], *actors)
            c.start_workers()
            yield c
    finally:
        engine.dispose()
        _drop_pg_database(pg_base_url, url)


# ---------------------------------------------------------------- tests


def test_twenty_disjoint_runs_each_run_exactly_once(cluster: Cluster) -> None:
    seed = Seed(cluster.engine)
    depot = seed.depot()
    scopes, expected = [], {}
    for i in range(20):
        item = seed.item()
        lot = seed.lot(depot, item, 50)
        _, line = seed.hospital_line(seed.region(i), item, 30)
        scopes.append({"regions": [seed.region(i)], "item_ids": [item.id]})
        expected[i] = (lot, line)

    responses = at_once([lambda client, s=s, i=i: trigger(cluster, client, s, i) for i, s in enumerate(scopes)])
    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses if r.status_code != 202]
    run_ids = [int(r.json()["id"]) for r in responses]
    assert len(set(run_ids)) == 20

    runs = wait_for_runs(cluster.engine, run_ids)
    workers = {worker_identity(w) for w in cluster.workers}
    with transaction(cluster.engine) as s:
        plans = s.exec(select(Plan).where(col(Plan.run_id).in_(run_ids))).all()
    assert sorted(p.run_id for p in plans) == sorted(run_ids)  # exactly one plan per run
    for i, run_id in enumerate(run_ids):
        run = runs[run_id]
        assert (run.status, run.attempts, run.error) == ("succeeded", 1, None), run_id
        assert run.worker_id in workers and (run.solver_stats or {}).get("worker_id") == run.worker_id
        assert audit_count(cluster.engine, "allocation_run.succeeded", run_id) == 1
        assert audit_count(cluster.engine, "allocation_run.requeue", run_id) == 0
        plan, _ = get_plan(cluster, run_id)  # each run planned its own region's line from its own lot
        lot, line = expected[i]
        assert [(x["lot_id"], x["request_line_id"], x["quantity"]) for x in plan["lines"]] == [(lot, line, 30)]


def test_fifty_concurrent_approvals_of_one_plan(cluster: Cluster) -> None:
    seed = Seed(cluster.engine)
    item, depot = seed.item(), seed.depot()
    lot = seed.lot(depot, item, 200)
    lines = [seed.hospital_line(seed.region(0), item, q)[1] for q in (40, 60)]
    run_id = run_and_wait(cluster, {"regions": [seed.region(0)], "item_ids": [item.id]})
    plan, etag = get_plan(cluster, run_id)
    assert sorted((x["request_line_id"], x["quantity"]) for x in plan["lines"]) == sorted(
        zip(lines, (40, 60), strict=True)
    )

    responses = at_once([approve_call(cluster, run_id, etag, i) for i in range(50)])
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1 and set(codes) <= {200, 409, 412}, codes
    [winner] = [r.json() for r in responses if r.status_code == 200]
    assert winner["state"] == "approved" and len(winner["shipment_ids"]) == 2

    with transaction(cluster.engine) as s:
        shipments = s.exec(select(Shipment).where(Shipment.plan_id == plan["id"])).all()
        reserved = {
            x.id: x.quantity_reserved for x in s.exec(select(RequestLine).where(col(RequestLine.id).in_(lines)))
        }
    assert sorted(x.id for x in shipments) == sorted(winner["shipment_ids"])  # created once
    balances, sums, moves = ledger(cluster.engine, lot)
    assert balances == sums == (200, 100)
    assert sorted(moves) == [("receive", 200), ("reserve", 40), ("reserve", 60)]  # reserved once
    assert reserved == dict(zip(lines, (40, 60), strict=True))
    assert audit_count(cluster.engine, "plan.approve", plan["id"]) == 1


def test_plans_competing_for_one_lot_never_oversell(cluster: Cluster) -> None:
    seed = Seed(cluster.engine)
    item, depot = seed.item(), seed.depot()
    lot = seed.lot(depot, item, 100)
    lines = [seed.hospital_line(seed.region(i), item, 80)[1] for i in range(4)]
    triggered = at_once(
        [
            lambda client, i=i: trigger(cluster, client, {"regions": [seed.region(i)], "item_ids": [item.id]}, i)
            for i in range(4)
        ]
    )
    assert [r.status_code for r in triggered] == [202] * 4  # disjoint scopes, though they share the lot
    run_ids = [int(r.json()["id"]) for r in triggered]
    assert all(r.status == "succeeded" for r in wait_for_runs(cluster.engine, run_ids).values())
    plans = [get_plan(cluster, r) for r in run_ids]
    for (plan, _), line in zip(plans, lines, strict=True):  # each plan alone would take 80 of the lot's 100
        assert [(x["lot_id"], x["request_line_id"], x["quantity"]) for x in plan["lines"]] == [(lot, line, 80)]

    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:  # the lot as readers see it while the approvals race
        with httpx.Client(timeout=30.0) as client:
            while not stop.is_set():
                r = client.get(f"{cluster.url()}/v1/inventory/lots/{lot}", headers=cluster.admin.headers)
                samples.append((r.json()["on_hand"], r.json()["reserved"]))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        responses = at_once(
            [
                approve_call(cluster, run_id, etag, i)
                for i, (run_id, (_, etag)) in enumerate(zip(run_ids, plans, strict=True))
            ]
        )
    finally:
        stop.set()
        sampler.join()

    codes = [r.status_code for r in responses]
    assert sorted(codes) == [200, 409, 409, 409], [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            [conflict] = r.json()["conflicts"]
            assert (conflict["kind"], conflict["id"], conflict["reason"]) == ("lot", lot, "insufficient_stock")
            assert (conflict["needed"], conflict["available"]) == (80, 20)
    assert samples and all(on_hand >= 0 and 0 <= reserved <= on_hand for on_hand, reserved in samples)
    balances, sums, moves = ledger(cluster.engine, lot)
    assert balances == sums == (100, 80) and sorted(moves) == [("receive", 100), ("reserve", 80)]
    with transaction(cluster.engine) as s:
        states = {p.run_id: p.state for p in s.exec(select(Plan).where(col(Plan.run_id).in_(run_ids)))}
        shipped = s.exec(select(Shipment.plan_id).where(col(Shipment.plan_id).in_([p["id"] for p, _ in plans]))).all()
    winner = run_ids[codes.index(200)]
    assert states == {r: "approved" if r == winner else "proposed" for r in run_ids}  # losers wrote nothing
    assert shipped == [plans[codes.index(200)][0]["id"]]


def test_change_feed_read_while_both_apis_take_writes(cluster: Cluster) -> None:
    """Three writers (each owning two shipments) post assignments and status events through both APIs
    while a client long-polls the feed. The feed collapses a shipment changed twice between two reads
    into its latest state (documented), so not every version need appear. The check: every item is a change
    that was made, after the cursor, in change order, never twice; once the cursor has passed a change, the
    client has seen that shipment at that version or later — or the shipment changed again beyond the cursor
    and shows up further on; at the end the client holds every shipment's final version and state."""
    seed = Seed(cluster.engine)
    item, depot = seed.item(), seed.depot()
    seed.lot(depot, item, 600)
    for _ in range(6):
        seed.hospital_line(seed.region(0), item, 50)
    run_id = run_and_wait(cluster, {"regions": [seed.region(0)], "item_ids": [item.id]})
    plan, etag = get_plan(cluster, run_id)
    [approved] = at_once([approve_call(cluster, run_id, etag, 0)])
    assert approved.status_code == 200, approved.text
    shipment_ids: list[int] = approved.json()["shipment_ids"]
    assert len(shipment_ids) == 6

    made: dict[int, dict[int, int]] = {}  # shipment → version → feed position, as the writes reported them
    etags: dict[int, str] = {}
    for sid in shipment_ids:
        r = httpx.get(f"{cluster.url()}/v1/shipments/{sid}", headers=cluster.logistics.headers)
        made[sid] = {r.json()["version"]: r.json()["change_seq"]}
        etags[sid] = r.headers["ETag"]

    reads: list[tuple[int, list[tuple[int, int, int, str]], int, bool]] = []
    failures: list[BaseException] = []
    writers_done = threading.Event()

    def reader() -> None:
        cursor, turn = "0", 0
        with httpx.Client(timeout=40.0) as client:
            while True:
                finished = writers_done.is_set()
                params = {"updated_since": cursor, "wait": 2, "plan_id": plan["id"], "limit": 4}
                r = client.get(f"{cluster.url(turn)}/v1/shipments", params=params, headers=cluster.logistics.headers)
                turn += 1
                assert r.status_code == 200, r.text
                body = r.json()
                items = [(x["id"], x["version"], x["change_seq"], x["status"]) for x in body["items"]]
                reads.append((decode_cursor(cursor), items, decode_cursor(body["next_cursor"]), body["has_more"]))
                cursor = body["next_cursor"]
                if finished and not items and not body["has_more"]:
                    return

    steps = [("assign", True), ("assign", False), ("assign", True), ("dispatched",), ("in_transit",), ("delivered",)]

    def writer(sids: list[int], offset: int) -> None:
        with httpx.Client(timeout=40.0) as client:
            for n, (step, sid) in enumerate((step, sid) for step in steps for sid in sids):
                base, headers = cluster.url(offset + n), cluster.logistics.headers | {"If-Match": etags[sid]}
                if step[0] == "assign":
                    body = {"driver_key_id": cluster.driver.key_id if step[1] else None}
                    r = client.post(f"{base}/v1/shipments/{sid}/assign", json=body, headers=headers)
                else:
                    r = client.post(f"{base}/v1/shipments/{sid}/events", json={"status": step[0]}, headers=headers)
                assert r.status_code in (200, 201), r.text
                etags[sid] = r.headers["ETag"]
                made[sid][r.json()["version"]] = r.json()["change_seq"]

    def guarded(fn: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001  (re-raised in the test thread)
                failures.append(exc)

        return threading.Thread(target=run)

    poller = guarded(reader)
    writers = [guarded(writer, shipment_ids[i : i + 2], i) for i in range(0, 6, 2)]
    poller.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    writers_done.set()
    poller.join(timeout=120)
    assert not failures, failures
    assert not poller.is_alive()

    positions = [q for versions in made.values() for q in versions.values()]
    assert len(positions) == 6 * 7 and len(set(positions)) == len(positions)  # every change its own position
    fed = [item for _, items, _, _ in reads for item in items]
    assert len({(sid, v) for sid, v, _, _ in fed}) == len(fed)  # no version delivered twice
    assert [q for _, _, q, _ in fed] == sorted({q for _, _, q, _ in fed})  # in change order, no repeats
    seen: dict[int, int] = {}
    for before, items, after, _ in reads:
        for sid, version, q, _ in items:
            assert q > before and made[sid][version] == q  # exactly a change that was made, after the cursor
            seen[sid] = max(seen.get(sid, 0), version)
        assert after == (items[-1][2] if items else before)
        for sid, versions in made.items():
            # Every change up to the cursor has been seen — or the shipment changed again after the cursor
            # (the feed then shows it once, in its latest state, further on).
            later = any(q > after for q in versions.values())
            missed = [v for v, q in versions.items() if q <= after and seen.get(sid, 0) < v]
            assert not missed or later, (sid, missed, after, reads)
    assert seen == {sid: max(versions) for sid, versions in made.items()}
    last = {sid: status for sid, _, _, status in fed}
    assert last == dict.fromkeys(shipment_ids, "delivered")
    with transaction(cluster.engine) as s:
        rows = s.exec(select(Shipment).where(col(Shipment.id).in_(shipment_ids))).all()
    assert {x.id: (x.version, x.status) for x in rows} == {sid: (seen[sid], "delivered") for sid in shipment_ids}


def test_worker_killed_mid_solve_is_requeued_and_no_partial_plan_shows(cluster: Cluster, tmp_path: Path) -> None:
    seed = Seed(cluster.engine)
    item, depot = seed.item(), seed.depot()
    lot = seed.lot(depot, item, 100)
    _, line = seed.hospital_line(seed.region(0), item, 40)
    pause = tmp_path / "solve-pause"
    observations: list[tuple[str, int, str]] = []  # (run status, GET …/plan status, run status after)
    stop = threading.Event()

    def observe(run_id: int) -> None:
        run_url, plan_url = f"/v1/allocation-runs/{run_id}", f"/v1/allocation-runs/{run_id}/plan"
        with httpx.Client(timeout=30.0, headers=cluster.logistics.headers) as client:
            while not stop.is_set():
                before = client.get(cluster.url(0) + run_url).json()["status"]
                plan_status = client.get(cluster.url(1) + plan_url).status_code
                after = client.get(cluster.url(0) + run_url).json()["status"]
                observations.append((before, plan_status, after))
                time.sleep(0.05)

    cluster.stop_workers()  # only the paused worker may claim this run
    paused: Proc | None = None
    recovery: Proc | None = None
    observer: threading.Thread | None = None
    try:
        paused = cluster.procs.start_worker(env=WORKER_ENV | {"CRISIS_TEST_SOLVE_PAUSE_FILE": str(pause)})
        with httpx.Client(timeout=30.0) as client:
            r = trigger(cluster, client, {"regions": [seed.region(0)], "item_ids": [item.id]})
        assert r.status_code == 202, r.text
        run_id = int(r.json()["id"])
        deadline = time.monotonic() + 30
        while not pause.exists():  # the worker has claimed the run and is "solving"
            assert paused.alive() and time.monotonic() < deadline, paused.log_tail()
            time.sleep(0.05)
        with transaction(cluster.engine) as s:
            run = s.get(AllocationRun, run_id)
            assert run is not None and (run.status, run.attempts) == ("running", 1)
            assert run.worker_id == worker_identity(paused)
            assert s.exec(select(func.count()).where(Plan.run_id == run_id)).one() == 0
        observer = threading.Thread(target=observe, args=(run_id,))
        observer.start()
        time.sleep(0.3)

        paused.kill_hard()  # kill -9 mid-solve
        killed_at = time.monotonic()
        cluster.procs.stop(paused)
        pause.unlink(missing_ok=True)
        recovery = cluster.procs.start_worker(env=WORKER_ENV | {"CRISIS_WORKER_STALE_AFTER_S": "3"})
        run = wait_for_runs(cluster.engine, [run_id], timeout_s=60)[run_id]
        assert time.monotonic() - killed_at < 60
        time.sleep(0.3)  # a few observations of the finished run
        stop.set()
        observer.join(timeout=30)

        assert (run.status, run.attempts, run.worker_id) == ("succeeded", 2, worker_identity(recovery)), run.error
        assert audit_count(cluster.engine, "allocation_run.requeue", run_id) == 1
        plan, _ = get_plan(cluster, run_id)
        assert [(x["lot_id"], x["request_line_id"], x["quantity"]) for x in plan["lines"]] == [(lot, line, 40)]
        # The plan is visible exactly when the run has succeeded: never before, never missing after.
        assert all(p in (200, 404) for _, p, _ in observations)
        assert all(after == "succeeded" for _, p, after in observations if p == 200)
        assert all(p == 200 for before, p, _ in observations if before == "succeeded")
        assert any(p == 404 and before == "running" for before, p, _ in observations)
        assert observations[-1] == ("succeeded", 200, "succeeded")
    finally:
        stop.set()
        if observer is not None:
            observer.join(timeout=30)
        for proc in (paused, recovery):
            if proc is not None:
                cluster.procs.stop(proc)
        pause.unlink(missing_ok=True)
        cluster.start_workers()
