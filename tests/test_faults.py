"""Faults with real processes (issue 5, item 7).

1. `kill -9` of the API process while a plan approval is provably inside its transaction (the test-only
   hook CRISIS_TEST_APPROVAL_PAUSE_FILE holds it there after shipments and reservations are written):
   afterwards none of the approval is visible, and approving again through a new process does all of it.
   SQLite (a file database) and PostgreSQL (a fresh database on the test server).
2. A PostgreSQL restart during a polling load, on a throwaway cluster this test starts itself
   (tests/pg_throwaway.py), never the shared server: 503 problem+json during the outage, correct
   answers after it, and the change feed loses no update made before, during or after it.

A worker killed mid-solve is covered by tests/test_concurrency.py
(`test_worker_killed_mid_solve_is_requeued_and_no_partial_plan_shows`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel, col, select

from app.allocation import plan_approval, worker
from app.allocation.models import Plan, PlanLine
from app.audit.models import AuditEvent
from app.db import make_engine, transaction
from app.inventory import service as inventory
from app.inventory.models import InventoryLot, InventoryMovement
from app.migrate import upgrade
from app.pledges.models import Pledge
from app.principal import SYSTEM
from app.requests.models import RequestLine
from app.shipments.models import Shipment
from tests.conftest import REQUIRE_POSTGRES, Actor, _create_pg_database, _drop_pg_database
from tests.factories import Factory
from tests.pg_throwaway import ThrowawayPostgres, unavailable_reason
from tests.procs import Proc, Processes
from tests.runs_world import Rows

API_ENV = {"CRISIS_RATE_LIMIT_WRITES_PER_MINUTE": "0", "CRISIS_RATE_LIMIT_READS_PER_MINUTE": "0"}
PROBLEM = "application/problem+json"
LEAKS = ("Traceback", "psycopg", "OperationalError", "SELECT", "connection refused", "127.0.0.1")


# ---------------------------------------------------------------- a small world with a proposed plan


@dataclass
class World:
    engine: Engine
    logistics: Actor
    lot_id: int
    pledge_id: int
    line_ids: list[int]


def build_world(engine: Engine) -> World:
    """One depot lot (50) and one confirmed pledge (10) for three hospitals asking 20 each: the plan
    needs both sources and ships to three destinations. Stock enters through the ledger."""
    rows = Rows(engine)
    depot = rows.site(rows.org("depot_operator", "north"), "depot", 40.70, -74.00)
    donor = rows.org("donor", "north")
    donor_site = rows.site(donor, "donor_site", 40.75, -73.90)
    item = rows.item(f"N95-{os.getpid()}-{time.monotonic_ns()}")
    lines = []
    for i in range(3):
        hospital = rows.org("hospital", "north")
        dock = rows.site(hospital, "hospital_dock", 40.80 + i / 100, -73.95)
        lines.append(rows.line(hospital, dock, item, 20, "high").id)
    pledge = rows.pledge(donor, donor_site, item, 10)
    with transaction(engine) as s:
        lot, _ = inventory.receive(s, actor=SYSTEM, site_id=depot.id or 0, item_id=item.id or 0, quantity=50)
    return World(engine, Factory(engine).actor("logistics"), lot.id or 0, pledge.id or 0, lines)


def solve_a_plan(base_url: str, w: World) -> int:
    """Trigger a run through the API; solve it in this process (what a worker does)."""
    r = httpx.post(
        f"{base_url}/v1/allocation-runs", json={"settings": {"time_limit_s": 10}}, headers=w.logistics.headers
    )
    assert r.status_code == 202, r.text
    run_id = int(r.json()["id"])
    assert worker.claim_next(w.engine, "faults") == run_id
    assert worker.process_run(w.engine, run_id, "faults", heartbeat_interval=0.2) == "succeeded"
    return run_id


def approve(base_url: str, w: World, run_id: int, timeout: float = 30.0) -> httpx.Response:
    plan = httpx.get(f"{base_url}/v1/allocation-runs/{run_id}/plan", headers=w.logistics.headers)
    assert plan.status_code == 200, plan.text
    headers = {**w.logistics.headers, "If-Match": plan.headers["ETag"]}
    return httpx.post(f"{base_url}/v1/allocation-runs/{run_id}/plan/approve", headers=headers, timeout=timeout)


def everything(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, as sorted text: two equal dumps mean nothing changed anywhere."""
    with engine.connect() as conn:
        return {
            t.name: sorted(repr(tuple(row)) for row in conn.execute(t.select()))
            for t in SQLModel.metadata.sorted_tables
        }


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- 1. kill -9 inside the approval


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fault_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'faults.db'}"
        return
    base = request.getfixturevalue("pg_base_url")  # a fresh database on the test server (not restarted)
    url = _create_pg_database(base)
    try:
        yield url
    finally:
        _drop_pg_database(base, url)


def assert_write_locked(engine: Engine, db_url: str, plan_id: int) -> None:
    """Proof that the approval holds its transaction open: its locks refuse another writer."""
    if engine.dialect.name == "sqlite":
        conn = sqlite3.connect(make_url(db_url).database or "", timeout=0.2, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.close()
        return
    with engine.connect() as conn, pytest.raises(OperationalError, match="lock"):
        conn.execute(text("SELECT id FROM plans WHERE id = :id FOR UPDATE NOWAIT"), {"id": plan_id})


def test_kill_9_inside_an_approval_leaves_none_of_it_and_a_retry_does_all_of_it(
    fault_db_url: str, tmp_path: Path
) -> None:
    upgrade(fault_db_url)
    engine = make_engine(fault_db_url)
    pause = tmp_path / "approval-paused"
    try:
        w = build_world(engine)
        with Processes(fault_db_url, tmp_path / "procs", env=API_ENV) as procs:
            api = procs.start_api(env={plan_approval.PAUSE_FILE_ENV: str(pause)})
            # The process that retries afterwards (no hook) starts meanwhile: start-up is mostly imports.
            started: list[Proc] = []
            starting = threading.Thread(target=lambda: started.append(procs.start_api()))
            starting.start()
            run_id = solve_a_plan(api.base_url, w)
            with transaction(engine) as s:
                plan = s.exec(select(Plan).where(Plan.run_id == run_id)).one()
                plan_lines = s.exec(select(PlanLine).where(PlanLine.plan_id == plan.id)).all()
            assert {x.lot_id for x in plan_lines} - {None} == {w.lot_id}, "the plan should take from the lot"
            assert {x.pledge_id for x in plan_lines} - {None} == {w.pledge_id}, "…and from the pledge"
            before = everything(engine)

            outcome: list[object] = []
            client = threading.Thread(target=lambda: outcome.append(_approve_catching(api.base_url, w, run_id)))
            client.start()
            wait_until("the approval to reach the pause hook", pause.exists)
            assert_write_locked(engine, fault_db_url, plan.id or 0)
            api.kill_hard()  # SIGKILL while the transaction holds shipments and reservations
            client.join(timeout=30)
            assert outcome and isinstance(outcome[0], httpx.TransportError), f"the client got an answer: {outcome}"

            # None of it: every table exactly as before the approval started.
            assert everything(engine) == before
            with transaction(engine) as s:
                assert s.get(Plan, plan.id).state == "proposed"  # type: ignore[union-attr]
                assert s.exec(select(func.count()).select_from(Shipment)).one() == 0
                assert s.get(InventoryLot, w.lot_id).reserved == 0  # type: ignore[union-attr]

            # A fresh process (no hook) approves the same plan: all of it.
            pause.unlink(missing_ok=True)
            starting.join(timeout=120)
            [fresh] = started
            r = approve(fresh.base_url, w, run_id)
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "approved"
            _assert_fully_approved(w, plan.id or 0, plan_lines, fresh.base_url)
    finally:
        engine.dispose()


def _approve_catching(base_url: str, w: World, run_id: int) -> object:
    try:
        return approve(base_url, w, run_id, timeout=150.0)
    except httpx.HTTPError as exc:
        return exc


def _assert_fully_approved(w: World, plan_id: int, plan_lines: list[PlanLine], base_url: str) -> None:
    lot_qty = sum(x.quantity for x in plan_lines if x.lot_id is not None)
    pledge_qty = sum(x.quantity for x in plan_lines if x.pledge_id is not None)
    per_line: dict[int, int] = {}
    for x in plan_lines:
        per_line[x.request_line_id] = per_line.get(x.request_line_id, 0) + x.quantity
    with transaction(w.engine) as s:
        assert s.get(Plan, plan_id).state == "approved"  # type: ignore[union-attr]
        shipments = s.exec(select(Shipment).where(Shipment.plan_id == plan_id)).all()
        reserves = s.exec(
            select(InventoryMovement).where(InventoryMovement.lot_id == w.lot_id, InventoryMovement.kind == "reserve")
        ).all()
        lot = s.get(InventoryLot, w.lot_id)
        pledge = s.get(Pledge, w.pledge_id)
        lines = {x.id: x for x in s.exec(select(RequestLine).where(col(RequestLine.id).in_(w.line_ids))).all()}
        approvals = s.exec(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "plan.approve"))
        assert approvals.one() == 1
    assert len(shipments) == len({(x.origin_site_id, x.destination_site_id) for x in plan_lines})
    assert sum(m.quantity for m in reserves) == lot_qty and lot is not None and lot.reserved == lot_qty
    assert pledge is not None and pledge.committed == pledge_qty
    assert {i: lines[i].quantity_reserved for i in per_line} == per_line
    listed = httpx.get(f"{base_url}/v1/shipments", params={"plan_id": plan_id}, headers=w.logistics.headers)
    assert sorted(x["id"] for x in listed.json()["items"]) == sorted(x.id for x in shipments)


# ---------------------------------------------------------------- 2. PostgreSQL restart while clients poll


@pytest.fixture
def throwaway_pg(pg_base_url: str) -> Iterator[ThrowawayPostgres]:
    """A private cluster on its own port (the PostgreSQL tier's skip rule applies: pg_base_url)."""
    reason = unavailable_reason()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(f"REQUIRE_POSTGRES=1 but no throwaway cluster can be made: {reason}")
        pytest.skip(reason)
    with ThrowawayPostgres() as pg:
        pg.start()
        yield pg


@dataclass
class Answer:
    started: float
    kind: str  # "shipment" or "feed"
    path: str
    status: int | None  # None: no HTTP answer at all (connection failed)
    content_type: str = ""
    retry_after: str | None = None
    text: str = ""


@dataclass
class Poller:
    """A mobile client: reads each shipment and follows the change feed with its cursor, nonstop."""

    base_url: str
    headers: dict[str, str]
    shipment_ids: list[int]
    cursor: str = "0"
    latest: dict[int, tuple[int, str]] = field(default_factory=dict)  # id → (version, status) from the feed
    answers: list[Answer] = field(default_factory=list)
    went_back: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10.0) as client:
            while not self.stop.is_set():
                for sid in self.shipment_ids:
                    self._get(client, "shipment", f"/v1/shipments/{sid}")
                self._follow_feed(client)
                time.sleep(0.02)

    def _get(self, client: httpx.Client, kind: str, url: str, **params: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            r = client.get(url, params=params)
        except httpx.HTTPError as exc:
            self.answers.append(Answer(started, kind, url, None, text=repr(exc)))
            return None
        ctype, retry = r.headers.get("content-type", ""), r.headers.get("retry-after")
        self.answers.append(Answer(started, kind, url, r.status_code, ctype, retry, r.text))
        return r

    def _follow_feed(self, client: httpx.Client) -> None:
        while True:
            r = self._get(client, "feed", "/v1/shipments", updated_since=self.cursor, limit=100)
            if r is None or r.status_code != 200:
                return  # keep the cursor: the next read resumes exactly where this one would have
            body = r.json()
            for item in body["items"]:
                seen = self.latest.get(item["id"])
                if seen is not None and item["version"] < seen[0]:
                    self.went_back.append(f"shipment {item['id']}: version {item['version']} after {seen[0]}")
                self.latest[item["id"]] = (item["version"], item["status"])
            self.cursor = body["next_cursor"]
            if not body["has_more"]:
                return


def shipments_now(engine: Engine) -> dict[int, tuple[int, str]]:
    with transaction(engine) as s:
        return {x.id or 0: (x.version, x.status) for x in s.exec(select(Shipment)).all()}


@pytest.mark.postgres
def test_postgres_restart_while_clients_poll_gives_503_then_correct_answers_and_no_lost_events(
    throwaway_pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    pg = throwaway_pg
    upgrade(pg.url)
    engine = make_engine(pg.url)
    try:
        w = build_world(engine)
        with Processes(pg.url, tmp_path / "procs", env=API_ENV) as procs:
            api = procs.start_api()
            run_id = solve_a_plan(api.base_url, w)
            assert approve(api.base_url, w, run_id).status_code == 200
            first, second, *_ = ids = sorted(shipments_now(engine))

            def event(sid: int, status: str, key: str | None = None) -> httpx.Response:
                headers = w.logistics.headers | ({"Idempotency-Key": key} if key else {})
                url = f"{api.base_url}/v1/shipments/{sid}/events"
                return httpx.post(url, json={"status": status}, headers=headers, timeout=10.0)

            poller = Poller(api.base_url, w.logistics.headers, ids)
            polling = threading.Thread(target=poller.run)
            polling.start()
            try:
                assert event(first, "dispatched").status_code == 201  # before the outage
                wait_until(
                    "the feed to show the dispatch", lambda: poller.latest.get(first, (0, ""))[1] == "dispatched"
                )

                stopping = time.monotonic()
                pg.stop()  # fast shutdown: every connection is cut, open transactions roll back
                wait_until("clients to get 503s", lambda: _count_503(poller, stopping) >= 3, timeout_s=10)
                during = event(first, "in_transit", key="in-transit-1")  # with an Idempotency-Key: a middleware write
                read = httpx.get(f"{api.base_url}/v1/shipments/{first}", headers=w.logistics.headers)
                for r in (during, read):
                    _assert_clean_503(
                        r.status_code, r.headers.get("content-type", ""), r.headers.get("retry-after"), r.text
                    )
                time.sleep(max(0.0, 2.5 - (time.monotonic() - stopping)))
                pg.start()
                restarted = time.monotonic()

                retried = event(first, "in_transit", key="in-transit-1")  # the 503 stored nothing: it runs now
                assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers, retried.text
                assert event(second, "dispatched").status_code == 201
                assert event(first, "delivered").status_code == 201
                final = shipments_now(engine)
                wait_until("the feed to catch up", lambda: poller.latest == final, timeout_s=20)
                time.sleep(0.3)  # a few more rounds after recovery
            finally:
                poller.stop.set()
                polling.join(timeout=30)

            answers = list(poller.answers)
            assert [a for a in answers if a.status is None] == [], "the API process itself must stay reachable"
            assert {a.status for a in answers} <= {200, 503}, sorted({a.status or 0 for a in answers})
            unavailable = [a for a in answers if a.status == 503]
            assert unavailable, "the outage was never seen"
            for a in unavailable:
                # (a request already running when the server went down may be cut too)
                assert stopping - 1.0 <= a.started < restarted, "a 503 outside the outage"
                _assert_clean_503(a.status or 0, a.content_type, a.retry_after, a.text)
            after = [a for a in answers if a.started >= restarted]
            assert after and all(a.status == 200 for a in after), "answers after the restart must be correct"
            assert {a.kind for a in after} == {"shipment", "feed"}
            for sid in ids:  # the last read of each shipment shows it as the database has it
                last = next(a for a in reversed(after) if a.path == f"/v1/shipments/{sid}")
                assert (json.loads(last.text)["version"], json.loads(last.text)["status"]) == final[sid]

            # No lost updates: the feed client's view is the database's, and versions never went back.
            assert poller.latest == final and poller.went_back == []
            assert final[first][1] == "delivered" and final[second][1] == "dispatched"
            fresh = httpx.get(
                f"{api.base_url}/v1/shipments", params={"updated_since": "0"}, headers=w.logistics.headers
            )
            assert {x["id"]: (x["version"], x["status"]) for x in fresh.json()["items"]} == final
            history = httpx.get(f"{api.base_url}/v1/shipments/{first}/events", headers=w.logistics.headers).json()
            statuses = [e["status"] for e in history["items"]]
            assert statuses[-3:] == ["dispatched", "in_transit", "delivered"] and statuses.count("in_transit") == 1
    finally:
        engine.dispose()


def _count_503(poller: Poller, since: float) -> int:
    return sum(1 for a in list(poller.answers) if a.status == 503 and a.started >= since)


def _assert_clean_503(status: int, content_type: str, retry_after: str | None, body: str) -> None:
    assert status == 503, body
    assert content_type.startswith(PROBLEM), content_type
    assert retry_after is not None and int(retry_after) > 0
    for leak in LEAKS:
        assert leak not in body, f"{leak!r} in a 503 body: {body}"
