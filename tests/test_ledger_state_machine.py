"""Ledger properties (issue 5, item 6): a hypothesis state machine with its own model of stock drives the
HTTP API through random sequences of receive, adjust (some invalid), plan creation, plan edits and
removals, approval, rejection, shipment events (dispatch, in transit, deliver with shortfalls, fail,
return, cancel — and transitions that are not allowed), pledge confirm / receive / cancel and request
line cancellation. After every step the database must equal the model: per lot on_hand and reserved
(and both equal the ledger's sums, never negative, reserved ≤ on_hand, one movement per version), per
request line reserved / in transit / delivered and status, per pledge committed and status, every
shipment's status and every plan's state. Any rejected call (4xx) must leave every table as it was.

Speed: each example starts from a small world written straight into the database (the touched tables
are emptied, not the catalogue and keys), the app runs without rate limits, and commits do not wait for
the disk (SQLite `synchronous=OFF`, PostgreSQL `synchronous_commit=off`) — durability is not what this
test is about. Sequences are derandomized so CI runs the same ones every time."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Engine

from app.config import Settings, get_settings
from app.db import utcnow
from app.main import create_app
from app.operations.logging import configure_logging
from optimizer.io import format_time
from tests.factories import Factory
from tests.ledger_model import TRANSITIONS, Model, Ref, header_status, line_status
from tests.ledger_world import (
    Api,
    World,
    balances,
    everything,
    fast_engine,
    fresh_example,
    plan_lines,
    shipped,
    static_world,
)
from tests.plan_world import plan_dict, store_run

# Operations that must have been both accepted and refused during a run.
COVERED = (
    *("receive", "adjust", "POST /v1/pledges/{id}/receive"),
    *("POST /v1/allocation-runs/{id}/plan/approve", "POST /v1/allocation-runs/{id}/plan/reject"),
    *("PATCH /v1/allocation-runs/{id}/plan/lines/{id}", "DELETE /v1/allocation-runs/{id}/plan/lines/{id}"),
    *("event dispatched", "event in_transit", "event delivered", "event failed", "event returned", "event cancelled"),
)
# The order lawful next statuses are tried in: hypothesis prefers the first, so progress comes first.
FORWARD = ("dispatched", "in_transit", "delivered", "failed", "returned", "cancelled")
# Sequences per backend (CI runs both: 1,000 in all), of up to STEPS rules each; LEDGER_EXAMPLES
# overrides both for a longer soak, e.g. LEDGER_EXAMPLES=20000.
EXAMPLES = {"sqlite": 700, "postgresql": 300}
STEPS = 10


class Ledger(RuleBasedStateMachine):
    """Configured by the test below (class attributes): client, engine, world."""

    client: Api
    engine: Engine
    world: World
    runs = 0
    checks = 0  # invariant checks: after the set-up, after every step and between a shipment's moves
    outcomes: Counter[tuple[str, bool]] = Counter()  # (operation, accepted?) → calls, to prove coverage

    def __init__(self) -> None:
        super().__init__()
        self.m = Model()

    # ------------------------------------------------------------ set-up per example

    @initialize(
        n95=st.integers(5, 60),
        gloves=st.integers(1, 30),
        kn95=st.integers(1, 30),
        lot=st.integers(1, 60) | st.just(0),
        pledge=st.integers(1, 40),
        data=st.data(),
    )
    def fresh_world(self, n95: int, gloves: int, kn95: int, lot: int, pledge: int, data: st.DataObject) -> None:
        type(self).runs += 1
        fresh_example(self.engine, self.world, self.m, n95=n95, gloves=gloves, kn95=kn95, lot=lot, pledge=pledge)
        # Most sequences start with an approved plan, so shipments move from the first step.
        if data.draw(st.integers(0, 2), label="start without shipments?") < 2:
            self.approve(self.new_plan(data), data)

    # ------------------------------------------------------------ helpers

    def call(self, method: str, url: str, *, valid: bool, who: str = "logistics", **kw: Any) -> Any:
        """Call the API; a call the model expects to fail must fail (4xx) and change no table."""
        op = kw.pop("op", None) or re.sub(r"/\d+", "/{id}", f"{method} {url}")
        type(self).outcomes[(op, valid)] += 1
        before = None if valid else everything(self.engine)
        r = self.client.request(method, url, headers=self.world.keys[who] | kw.pop("headers", {}), **kw)
        if valid:
            assert r.status_code in (200, 201), f"{method} {url} {kw}: {r.status_code} {r.text}"
        else:
            assert 400 <= r.status_code < 500, f"{method} {url} {kw} should be refused: {r.status_code} {r.text}"
            assert everything(self.engine) == before, f"refused {method} {url} {kw} changed the database"
        return r

    def etag(self, url: str, data: st.DataObject) -> dict[str, str]:
        """If-Match for a plan change: mostly `*` (any current version: the call is still conditional),
        sometimes the ETag of a fresh read, as a careful client sends."""
        if data.draw(st.integers(0, 3), label="read the ETag?"):
            return {"If-Match": "*"}
        return {"If-Match": self.client.request("GET", url, headers=self.world.keys["logistics"]).headers["ETag"]}

    # ------------------------------------------------------------ stock

    @rule(
        site=st.sampled_from(["depot1", "depot2", "depot2", "dock1"]),
        sku=st.sampled_from(["N95", "KN95", "GLOVES"]),
        code=st.sampled_from([None, "A"]),
        qty=st.integers(1, 40),
        invalid=st.integers(0, 7),
    )
    def receive(self, site: str, sku: str, code: str | None, qty: int, invalid: int) -> None:
        qty = {6: 0, 7: -qty}.get(invalid, qty)  # mostly a real receipt; sometimes no or negative quantity
        valid = site.startswith("depot") and qty > 0
        body = {"kind": "receive", "site_id": self.world.sites[site], "item_id": self.world.items[sku]}
        body |= {"quantity": qty} | ({"lot_code": code} if code else {})
        r = self.call("POST", "/v1/inventory/movements", json=body, valid=valid, op="receive")
        if valid:
            self.m.receive(r.json()["lot_id"], site, sku, code, qty)

    @precondition(lambda self: self.m.lots)
    @rule(data=st.data(), mode=st.integers(0, 10), reason=st.sampled_from(["recount", "damaged", "theft"]))
    def adjust(self, data: st.DataObject, mode: int, reason: str) -> None:
        """A counted correction: mostly within what is unreserved; sometimes below the reservations, zero,
        without a reason, with a stale If-Match or on an unknown lot — all refused."""
        lot_id = 987654 if mode == 10 else data.draw(st.sampled_from(sorted(self.m.lots)), label="lot")
        lot = self.m.lots.get(lot_id)
        free = lot.on_hand - lot.reserved if lot else 5
        delta = data.draw(st.integers(-free, 30).filter(bool), label="delta") if free else data.draw(st.integers(1, 30))
        headers: dict[str, str] = {}
        if mode == 6:
            delta = -(free + data.draw(st.integers(1, 5), label="below reserved by"))
        elif mode == 7:
            delta = 0
        elif mode == 8:
            reason = ""
        elif mode == 9 and lot is not None and lot.version > 1:
            headers = {"If-Match": f'"v{lot.version - 1}"'}
        valid = lot is not None and (mode < 6 or (mode == 9 and not headers))
        body = {"kind": "adjust", "lot_id": lot_id, "delta": delta, "reason": reason}
        self.call("POST", "/v1/inventory/movements", json=body, headers=headers, valid=valid, op="adjust")
        if valid and lot:
            lot.on_hand += delta
            lot.version += 1

    # ------------------------------------------------------------ plans

    def new_plan(self, data: st.DataObject) -> int:
        """A tiny proposed plan over what is free now, stored as the worker stores one (create_plan)."""
        m = self.m
        chosen = data.draw(st.lists(st.sampled_from(m.candidate_pairs()), min_size=1, max_size=3, unique=True))
        free = {ref: m.free(ref) for ref in m.sources()}
        remaining = {lid: ln.remaining for lid, ln in m.lines.items()}
        allocations = []
        for src, lid in chosen:
            cap = min(free[src], remaining[lid])
            if cap > 0:
                qty = data.draw(st.integers(1, cap), label="quantity")
                allocations.append((src, lid, qty))
                free[src] -= qty
                remaining[lid] -= qty
        snap = self.snapshot()
        plan = plan_dict(snap, [(src.ident, f"line-{lid}", q) for src, lid, q in allocations])
        run_id = store_run(self.engine, snap, plan)
        rows = plan_lines(self.engine, run_id)
        assert sorted((ref, lid, q) for _, ref, lid, q in rows) == sorted(
            (s.ident, lid, q) for s, lid, q in allocations
        )
        m.add_plan(run_id, {pid: (Ref.parse(ref), lid, q) for pid, ref, lid, q in rows}, snap)
        return run_id

    def pick_plan(self, data: st.DataObject, *, with_lines: bool = False) -> tuple[int, str]:
        """Mostly a proposed plan; sometimes any (a decided plan refuses every change: 409)."""
        plans = {r: p for r, p in self.m.plans.items() if p.lines or not with_lines}
        proposed = sorted(r for r, p in plans.items() if p.state == "proposed")
        pool = proposed if proposed and data.draw(st.integers(0, 4), label="any plan?") < 4 else sorted(plans)
        run_id = data.draw(st.sampled_from(pool), label="run")
        return run_id, f"/v1/allocation-runs/{run_id}/plan"

    def approve(self, run_id: int, data: st.DataObject) -> None:
        url = f"/v1/allocation-runs/{run_id}/plan"
        plan = self.m.plans[run_id]
        stale = data.draw(st.integers(0, 9), label="stale If-Match?") == 9
        valid = plan.state == "proposed" and self.m.plan_fits(plan) and not stale
        headers = {"If-Match": '"v0-a0"'} if stale else self.etag(url, data)
        r = self.call("POST", f"{url}/approve", headers=headers, valid=valid)
        if not valid:
            return
        rows = shipped(self.engine, run_id)
        assert sorted({sid for sid, *_ in rows}) == sorted(r.json()["shipment_ids"])
        self.m.approve(run_id, rows, self.world.site_names)

    @precondition(lambda self: self.m.candidate_pairs())
    @rule(data=st.data())
    def plan(self, data: st.DataObject) -> None:
        """A new proposed plan, sometimes approved at once (the others wait for edits, approval or staleness)."""
        run_id = self.new_plan(data)
        if data.draw(st.integers(0, 2), label="approve now?") == 2:
            self.approve(run_id, data)

    @precondition(lambda self: self.m.plans)
    @rule(data=st.data())
    def approve_plan(self, data: st.DataObject) -> None:
        self.approve(self.pick_plan(data)[0], data)

    @precondition(lambda self: any(p.lines for p in self.m.plans.values()))
    @rule(data=st.data(), mode=st.integers(0, 5))
    def edit_plan_line(self, data: st.DataObject, mode: int) -> None:
        """Mostly a quantity the snapshot allows; sometimes one past it, or zero."""
        run_id, url = self.pick_plan(data, with_lines=True)
        plan = self.m.plans[run_id]
        line_id = data.draw(st.sampled_from(sorted(plan.lines)), label="plan line")
        most = plan.most_for(line_id)
        if mode == 5:
            qty = 0
        elif mode == 4 or most < 1:
            qty = most + 1
        else:
            qty = data.draw(st.integers(1, most), label="quantity")
        valid = plan.state == "proposed" and qty > 0 and plan.fits_snapshot(line_id, qty)
        self.call("PATCH", f"{url}/lines/{line_id}", json={"quantity": qty}, headers=self.etag(url, data), valid=valid)
        if valid:
            src, lid, _ = plan.lines[line_id]
            plan.lines[line_id] = (src, lid, qty)

    @precondition(lambda self: any(p.lines for p in self.m.plans.values()))
    @rule(data=st.data())
    def remove_plan_line(self, data: st.DataObject) -> None:
        run_id, url = self.pick_plan(data, with_lines=True)
        plan = self.m.plans[run_id]
        line_id = data.draw(st.sampled_from(sorted(plan.lines)), label="plan line")
        self.call("DELETE", f"{url}/lines/{line_id}", headers=self.etag(url, data), valid=plan.state == "proposed")
        if plan.state == "proposed":
            del plan.lines[line_id]

    @precondition(lambda self: self.m.plans)
    @rule(data=st.data())
    def reject_plan(self, data: st.DataObject) -> None:
        run_id, url = self.pick_plan(data)
        valid = self.m.plans[run_id].state == "proposed"
        self.call("POST", f"{url}/reject", valid=valid)
        if valid:
            self.m.plans[run_id].state = "rejected"

    # ------------------------------------------------------------ shipments

    def in_state(self, *states: str) -> list[int]:
        return sorted(i for i, s in self.m.shipments.items() if s.status in states)

    def deliver(self, sid: int, data: st.DataObject) -> bool:
        """Per line: all of it, or a shortfall with a reason — or an invalid receipt (more than shipped,
        a shortfall without a reason), which refuses the whole delivery. Returns whether it was accepted."""
        receipts, received = [], {}
        lines = self.m.shipments[sid].lines
        k = data.draw(st.integers(0, 3 * len(lines)), label="invalid line")
        broken = k - 2 * len(lines) - 1  # mostly -1 (none): a third of deliveries have a bad receipt
        for i, line in enumerate(lines):
            got = line.qty - data.draw(st.integers(0, line.qty), label="short by")
            reason = None if got == line.qty else data.draw(st.sampled_from(["damaged", "lost", "refused"]))
            if i == broken:
                got, reason = (line.qty + 1, None) if data.draw(st.booleans(), label="over?") else (line.qty - 1, None)
            receipts.append({"line_id": line.id, "quantity_received": got, "shortfall_reason": reason})
            received[line.id] = got
        valid = broken < 0
        body = {"status": "delivered", "lines": receipts, "received_by": "dock officer"}
        self.call("POST", f"/v1/shipments/{sid}/events", json=body, valid=valid, op="event delivered")
        if valid:
            self.m.shipment_event(sid, "delivered", received)
        return valid

    @precondition(lambda self: self.in_state("planned", "dispatched", "in_transit", "failed"))
    @rule(data=st.data())
    def advance_shipment(self, data: st.DataObject) -> None:
        """A shipment goes one to three lawful steps along planned → dispatched → in transit → delivered
        (with shortfalls) | failed → returned, or planned → cancelled; the invariants hold after each."""
        sid = data.draw(
            st.sampled_from(self.in_state("planned", "dispatched", "in_transit", "failed")), label="shipment"
        )
        for step in range(data.draw(st.integers(1, 3), label="moves")):
            lawful = [s for s in FORWARD if s in TRANSITIONS[self.m.shipments[sid].status]]
            if not lawful:
                return
            if step:
                self.database_equals_model_and_ledger()
            status = data.draw(st.sampled_from(lawful), label="status")
            if status == "delivered":
                if not self.deliver(sid, data):
                    return
                continue
            body = {"status": status} | (
                {"lat": 40.7, "lon": -74.0, "note": "on the way"} if status != "cancelled" else {}
            )
            self.call("POST", f"/v1/shipments/{sid}/events", json=body, valid=True, op=f"event {status}")
            self.m.shipment_event(sid, status, {})

    @precondition(lambda self: self.m.shipments)
    @rule(data=st.data())
    def unlawful_event(self, data: st.DataObject) -> None:
        """A status the shipment cannot take from where it is: 409, nothing changes."""
        sid = data.draw(st.sampled_from(sorted(self.m.shipments)), label="shipment")
        unlawful = sorted(set(TRANSITIONS) - TRANSITIONS[self.m.shipments[sid].status])
        status = data.draw(st.sampled_from(unlawful), label="status")
        self.call("POST", f"/v1/shipments/{sid}/events", json={"status": status}, valid=False, op=f"event {status}")

    # ------------------------------------------------------------ pledges and requests

    @rule(data=st.data(), depot=st.sampled_from(["depot1", "depot2", "dock1"]), qty=st.none() | st.integers(1, 45))
    def receive_pledge(self, data: st.DataObject, depot: str, qty: int | None) -> None:
        offered = sorted(i for i, p in self.m.pledges.items() if p.status == "confirmed" and p.quantity > p.committed)
        any_pledge = not offered or data.draw(st.integers(0, 3), label="any pledge?") == 3
        pid = data.draw(st.sampled_from(sorted(self.m.pledges) if any_pledge else offered), label="pledge")
        p = self.m.pledges[pid]
        free = p.quantity - p.committed
        amount = free if qty is None else qty
        valid = p.status == "confirmed" and free > 0 and amount <= free and depot.startswith("depot")
        body = {"depot_site_id": self.world.sites[depot]} | ({"quantity": qty} if qty is not None else {})
        r = self.call("POST", f"/v1/pledges/{pid}/receive", json=body, valid=valid)
        if valid:
            p.status = "received"
            self.m.receive(r.json()["received_lot_id"], depot, p.sku, f"PLEDGE-{pid}", amount)

    @rule(data=st.data(), action=st.sampled_from(["confirm", "cancel"]))
    def pledge_action(self, data: st.DataObject, action: str) -> None:
        pid = data.draw(st.sampled_from(sorted(self.m.pledges)), label="pledge")
        p = self.m.pledges[pid]
        if action == "confirm":
            valid, new = p.status == "pledged", "confirmed"
        else:
            valid, new = p.status in ("pledged", "confirmed") and p.committed == 0, "cancelled"
        self.call("POST", f"/v1/pledges/{pid}/{action}", valid=valid)
        if valid:
            p.status = new

    @rule(data=st.data())
    def cancel_request_line(self, data: st.DataObject) -> None:
        lid = data.draw(st.sampled_from(sorted(self.m.lines)), label="line")
        line = self.m.lines[lid]
        valid = line_status(line) == "open"
        url = f"/v1/requests/{line.request_id}/lines/{lid}/cancel"
        self.call("POST", url, who=line.org, valid=valid)
        if valid:
            line.cancelled = True

    # ------------------------------------------------------------ the invariants

    @invariant()
    def database_equals_model_and_ledger(self) -> None:
        type(self).checks += 1
        m, db = self.m, balances(self.engine)
        for lot_id, (on_hand, reserved, version) in db["lots"].items():
            assert on_hand >= 0 and 0 <= reserved <= on_hand, (lot_id, on_hand, reserved)
            assert db["ledger"][lot_id] == (on_hand, reserved, version), f"lot {lot_id}: balances ≠ ledger sums"
        assert db["lots"] == {i: (x.on_hand, x.reserved, x.version) for i, x in m.lots.items()}
        assert db["lines"] == {i: (x.reserved, x.in_transit, x.delivered, line_status(x)) for i, x in m.lines.items()}
        headers = {r: header_status(line_status(x) for x in m.lines.values() if x.request_id == r) for r in m.requests}
        assert db["requests"] == {r: (status,) for r, status in headers.items()}
        assert db["pledges"] == {i: (p.committed, p.status) for i, p in m.pledges.items()}
        assert db["shipments"] == {i: (s.status,) for i, s in m.shipments.items()}
        assert db["plans"] == {r: (p.state,) for r, p in m.plans.items()}

    # ------------------------------------------------------------ the snapshot a plan is made from

    def snapshot(self) -> dict[str, Any]:
        """Problem JSON v1 of what is free now (the model's numbers; the app's snapshotter is not under test)."""
        w, m = self.world, self.m
        items = [{"sku": "N95", "substitutes": [{"sku": "KN95", "penalty": 0.3}]}]
        items += [{"sku": "KN95", "substitutes": []}, {"sku": "GLOVES", "substitutes": []}]
        sources = [
            {"id": ref.ident, "item": m.sku_of(ref), "quantity": m.free(ref), **w.at(m.site_of(ref))}
            for ref in m.sources()
        ]
        demands = [
            {"id": f"line-{lid}", "requester": f"org-{w.orgs[ln.org]}", "item": ln.sku, "quantity": ln.remaining}
            | {"priority": "high", **w.at(ln.site)}
            for lid, ln in sorted(m.lines.items())
            if not ln.cancelled and ln.remaining > 0
        ]
        now = format_time(utcnow())
        return {"version": 1, "now": now, "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01}} | {
            "items": items,
            "sources": sources,
            "demands": demands,
        }


# ---------------------------------------------------------------- the test


@pytest.fixture
def fast(engine: Engine) -> Iterator[Engine]:
    fast = fast_engine(engine.url)
    yield fast
    fast.dispose()


def test_the_ledger_always_equals_the_model(engine: Engine, fast: Engine, factory: Factory) -> None:
    app_settings = Settings(
        rate_limit_writes_per_minute=0, rate_limit_reads_per_minute=0, embedded_worker="off", log_level="WARNING"
    )
    examples = int(os.environ.get("LEDGER_EXAMPLES", EXAMPLES[engine.dialect.name]))
    client = Api(create_app(engine=fast, settings=app_settings))
    Ledger.client, Ledger.engine, Ledger.world = client, fast, static_world(engine, factory)
    Ledger.runs = Ledger.checks = 0
    Ledger.outcomes = Counter()
    started = time.perf_counter()
    try:
        run_state_machine_as_test(
            Ledger,
            settings=settings(
                max_examples=examples,
                stateful_step_count=STEPS,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        client.close()
        configure_logging(get_settings().log_level)  # the app above quietened the access log
    elapsed = time.perf_counter() - started
    print(
        f"ledger state machine on {engine.dialect.name}: {Ledger.runs} sequences, "
        f"{Ledger.checks} invariant checks, {sum(Ledger.outcomes.values())} API calls, in {elapsed:.1f} s"
    )
    for (op, accepted), n in sorted(Ledger.outcomes.items()):
        print(f"  {op:60} {'accepted' if accepted else 'refused':9} {n}")
    assert Ledger.runs >= examples
    # every operation was both carried out and refused: the sequences reach deep states
    for op in COVERED if examples >= 100 else ():
        assert Ledger.outcomes[(op, True)] > 0, f"{op} never succeeded"
    # Refusals of every kind need the longer run (SQLite's share); the shorter PostgreSQL run may miss
    # a rare one (e.g. a refused dispatch) without covering less of what it checks after each step.
    for op in COVERED if examples >= 500 else ():
        assert Ledger.outcomes[(op, False)] > 0, f"{op} was never refused"
