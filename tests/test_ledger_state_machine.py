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

import asyncio
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
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
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import make_engine, transaction, utcnow
from app.inventory import service as inventory
from app.main import create_app
from app.principal import SYSTEM
from optimizer.io import format_time
from tests.factories import Factory
from tests.ledger_model import DYNAMIC_TABLES, WRITTEN_TABLES, TRANSITIONS, Model, Ref, header_status, line_status
from tests.test_plans import plan_dict, store_run

# Operations that must have been both accepted and refused during a run.
COVERED = (
    "receive", "adjust", "event dispatched", "event in_transit", "event delivered", "event failed", "event returned",
    "event cancelled", "POST /v1/allocation-runs/{id}/plan/approve", "PATCH /v1/allocation-runs/{id}/plan/lines/{id}",
    "DELETE /v1/allocation-runs/{id}/plan/lines/{id}", "POST /v1/pledges/{id}/receive",
)  # fmt: skip
# The order lawful next statuses are tried in: hypothesis prefers the first, so progress comes first.
FORWARD = ("dispatched", "in_transit", "delivered", "failed", "returned", "cancelled")
# Sequences per backend (CI runs both: 1,000 in all), of up to STEPS rules each; LEDGER_EXAMPLES
# overrides both for a longer soak, e.g. LEDGER_EXAMPLES=20000.
EXAMPLES = {"sqlite": 700, "postgresql": 300}
STEPS = 10


def fast_engine(url: Any) -> Engine:
    """A second engine on the test database whose commits skip the fsync (see the module docstring)."""
    engine = make_engine(url.render_as_string(hide_password=False))

    @event.listens_for(engine, "connect")
    def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF" if engine.dialect.name == "sqlite" else "SET synchronous_commit TO off")
        cur.close()

    return engine


class Api:
    """HTTP to the ASGI app through httpx, on one event loop in this thread (cheaper than TestClient's
    portal thread: the same requests, routers, middleware and one transaction per request)."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


class Ledger(RuleBasedStateMachine):
    """Configured by the test below (class attributes): client, engine, world."""

    client: Api
    engine: Engine
    world: dict[str, Any]
    runs = 0
    checks = 0  # invariant checks: one after the set-up and one after every step
    outcomes: Counter[tuple[str, bool]] = Counter()  # (operation, accepted?) → calls, to prove coverage

    def __init__(self) -> None:
        super().__init__()
        self.m = Model()

    # ------------------------------------------------------------ set-up per example

    @initialize(
        n95=st.integers(5, 60), gloves=st.integers(1, 30), kn95=st.integers(1, 30), lot_n95=st.integers(1, 60) | st.just(0),
        pledge=st.integers(1, 40), data=st.data(),
    )  # fmt: skip
    def fresh_world(self, n95: int, gloves: int, kn95: int, lot_n95: int, pledge: int, data: st.DataObject) -> None:
        type(self).runs += 1
        w, m = self.world, self.m
        with transaction(self.engine) as s:
            for table in DYNAMIC_TABLES:
                s.execute(text(f'DELETE FROM "{table}"'))
            s.execute(text("UPDATE change_counters SET value = 0"))
            for org, site, lines in (
                ("h1", "dock1", (("N95", n95, "critical"), ("GLOVES", gloves, "routine"))),
                ("h2", "dock2", (("N95", n95 // 2 + 1, "high"), ("KN95", kn95, "routine"))),
            ):
                rid = s.execute(
                    text("INSERT INTO requests (organization_id, site_id, status, version, created_at, updated_at) "
                         "VALUES (:o, :s, 'open', 1, :t, :t) RETURNING id"),
                    {"o": w["orgs"][org], "s": w["sites"][site], "t": utcnow()},
                ).scalar_one()  # fmt: skip
                m.requests[rid] = org
                for sku, qty, priority in lines:
                    lid = s.execute(
                        text("INSERT INTO request_lines (request_id, item_id, quantity, priority, status, "
                             "quantity_reserved, quantity_in_transit, quantity_delivered, created_at, updated_at) "
                             "VALUES (:r, :i, :q, :p, 'open', 0, 0, 0, :t, :t) RETURNING id"),
                        {"r": rid, "i": w["items"][sku], "q": qty, "p": priority, "t": utcnow()},
                    ).scalar_one()  # fmt: skip
                    m.add_line(lid, rid, sku, qty, site, org)
            for sku, qty, status in (("N95", pledge, "confirmed"), ("GLOVES", 10, "pledged")):
                pid = s.execute(
                    text("INSERT INTO pledges (organization_id, item_id, site_id, quantity, committed, available_from, "
                         "status, version, created_at, updated_at) VALUES (:o, :i, :s, :q, 0, :t, :st, 1, :t, :t) "
                         "RETURNING id"),
                    {"o": w["orgs"]["donor"], "i": w["items"][sku], "s": w["sites"]["donor"], "q": qty, "st": status,
                     "t": utcnow()},
                ).scalar_one()  # fmt: skip
                m.add_pledge(pid, sku, qty, status)
            if lot_n95:
                lot, _ = inventory.receive(
                    s, actor=SYSTEM, site_id=w["sites"]["depot1"], item_id=w["items"]["N95"], quantity=lot_n95
                )
                m.receive(lot.id or 0, "depot1", "N95", None, lot_n95)
        # Most sequences start with an approved plan, so shipments move from the first step.
        if data.draw(st.integers(0, 2), label="start without shipments?") < 2:
            self.approve(self.new_plan(data), data)

    # ------------------------------------------------------------ helpers

    def call(self, method: str, url: str, *, valid: bool, who: str = "logistics", **kw: Any) -> Any:
        """Call the API; a call the model expects to fail must fail (4xx) and change no table."""
        op = kw.pop("op", None) or re.sub(r"/\d+", "/{id}", f"{method} {url}")
        type(self).outcomes[(op, valid)] += 1
        before = None if valid else self.everything()
        r = self.client.request(method, url, headers=self.world["keys"][who] | kw.pop("headers", {}), **kw)
        if valid:
            assert r.status_code in (200, 201), f"{method} {url} {kw}: {r.status_code} {r.text}"
        else:
            assert 400 <= r.status_code < 500, f"{method} {url} {kw} should be refused: {r.status_code} {r.text}"
            assert self.everything() == before, f"refused {method} {url} {kw} changed the database"
        return r

    def everything(self) -> list[Any]:
        """Every row an operation here could write (the audit trail, append-only, by count and last id)."""
        with self.engine.connect() as conn:
            rows = [conn.execute(text(f'SELECT * FROM "{t}" ORDER BY 1')).all() for t in WRITTEN_TABLES]
            rows.append(conn.execute(text("SELECT COUNT(*), MAX(id) FROM audit_events")).one())
        return rows

    def etag(self, url: str, data: st.DataObject) -> dict[str, str]:
        """If-Match for a plan change: mostly `*` (any current version: the call is still conditional),
        sometimes the ETag of a fresh read, as a careful client sends."""
        if data.draw(st.integers(0, 3), label="read the ETag?"):
            return {"If-Match": "*"}
        return {"If-Match": self.client.get(url, headers=self.world["keys"]["logistics"]).headers["ETag"]}

    # ------------------------------------------------------------ stock

    @rule(
        site=st.sampled_from(["depot1", "depot2", "depot2", "dock1"]), sku=st.sampled_from(["N95", "KN95", "GLOVES"]),
        code=st.sampled_from([None, "A"]), qty=st.integers(1, 40), invalid=st.integers(0, 7),
    )  # fmt: skip
    def receive(self, site: str, sku: str, code: str | None, qty: int, invalid: int) -> None:
        qty = {6: 0, 7: -qty}.get(invalid, qty)  # mostly a real receipt; sometimes no or negative quantity
        valid = site.startswith("depot") and qty > 0
        body = {"kind": "receive", "site_id": self.world["sites"][site], "item_id": self.world["items"][sku]}
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
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pl.id, pl.source_ref, pl.request_line_id, pl.quantity FROM plan_lines pl "
                     "JOIN plans p ON p.id = pl.plan_id WHERE p.run_id = :r"), {"r": run_id}
            ).all()  # fmt: skip
        assert sorted((ref, lid, q) for _, ref, lid, q in rows) == sorted((s.ident, lid, q) for s, lid, q in allocations)
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
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT sl.shipment_id, sl.id, sl.plan_line_id, s.origin_site_id, s.destination_site_id "
                     "FROM shipment_lines sl JOIN shipments s ON s.id = sl.shipment_id WHERE s.plan_id = "
                     "(SELECT id FROM plans WHERE run_id = :r)"), {"r": run_id},
            ).all()  # fmt: skip
        assert sorted({sid for sid, *_ in rows}) == sorted(r.json()["shipment_ids"])
        self.m.approve(run_id, [(sid, sl, pl, (o, d)) for sid, sl, pl, o, d in rows], self.world["site_ids"])

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
        sid = data.draw(st.sampled_from(self.in_state("planned", "dispatched", "in_transit", "failed")), label="shipment")
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
            body = {"status": status} | ({"lat": 40.7, "lon": -74.0, "note": "on the way"} if status != "cancelled" else {})
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
        body = {"depot_site_id": self.world["sites"][depot]} | ({"quantity": qty} if qty is not None else {})
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
        m = self.m
        with self.engine.connect() as conn:
            lots = {i: (oh, rs, v) for i, oh, rs, v in conn.execute(text("SELECT id, on_hand, reserved, version FROM inventory_lots"))}  # fmt: skip
            ledger = {
                i: (int(a), int(b), n)
                for i, a, b, n in conn.execute(
                    text("SELECT lot_id, SUM(delta_on_hand), SUM(delta_reserved), COUNT(*) FROM inventory_movements GROUP BY lot_id")  # fmt: skip
                )
            }
            lines = {i: tuple(rest) for i, *rest in conn.execute(text(
                "SELECT id, quantity_reserved, quantity_in_transit, quantity_delivered, status FROM request_lines"))}  # fmt: skip
            headers = dict(conn.execute(text("SELECT id, status FROM requests")).all())
            pledges = {i: (c, s) for i, c, s in conn.execute(text("SELECT id, committed, status FROM pledges"))}
            shipments = dict(conn.execute(text("SELECT id, status FROM shipments")).all())
            plans = dict(conn.execute(text("SELECT run_id, state FROM plans")).all())
        for lot_id, (on_hand, reserved, version) in lots.items():
            assert on_hand >= 0 and 0 <= reserved <= on_hand, (lot_id, on_hand, reserved)
            assert ledger[lot_id] == (on_hand, reserved, version), f"lot {lot_id}: balances ≠ ledger sums"
        assert lots == {i: (x.on_hand, x.reserved, x.version) for i, x in m.lots.items()}
        assert lines == {i: (x.reserved, x.in_transit, x.delivered, line_status(x)) for i, x in m.lines.items()}
        assert headers == {r: header_status([line_status(x) for x in m.lines.values() if x.request_id == r]) for r in m.requests}  # fmt: skip
        assert pledges == {i: (p.committed, p.status) for i, p in m.pledges.items()}
        assert shipments == {i: s.status for i, s in m.shipments.items()}
        assert plans == {r: p.state for r, p in m.plans.items()}

    # ------------------------------------------------------------ the snapshot a plan is made from

    def snapshot(self) -> dict[str, Any]:
        """Problem JSON v1 of what is free now (the model's numbers; the app's snapshotter is not under test)."""
        w, m = self.world, self.m
        xy = w["xy"]
        return {
            "version": 1,
            "now": format_time(utcnow()),
            "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01},
            "items": [
                {"sku": "N95", "substitutes": [{"sku": "KN95", "penalty": 0.3}]},
                {"sku": "KN95", "substitutes": []},
                {"sku": "GLOVES", "substitutes": []},
            ],
            "sources": [
                {"id": ref.ident, "item": m.sku_of(ref), "quantity": m.free(ref), **xy[m.site_of(ref)]}
                for ref in m.sources()
            ],
            "demands": [
                {"id": f"line-{lid}", "requester": f"org-{w['orgs'][ln.org]}", "item": ln.sku,
                 "quantity": ln.remaining, "priority": "high", **xy[ln.site]}
                for lid, ln in sorted(m.lines.items()) if not ln.cancelled and ln.remaining > 0
            ],
        }  # fmt: skip


# ---------------------------------------------------------------- the static world and the test


def _world(engine: Engine, factory: Factory) -> dict[str, Any]:
    orgs = {"operator": factory.org(kind="depot_operator"), "h1": factory.org(), "h2": factory.org(region="south")}
    orgs["donor"] = factory.org(kind="donor")
    xy = {"depot1": (40.70, -74.00), "depot2": (40.65, -73.95), "dock1": (40.80, -73.95), "dock2": (40.60, -74.10)}
    xy["donor"] = (40.75, -73.90)
    owner = {"depot1": "operator", "depot2": "operator", "dock1": "h1", "dock2": "h2", "donor": "donor"}
    kind = {"depot1": "depot", "depot2": "depot", "dock1": "hospital_dock", "dock2": "hospital_dock"}
    kind["donor"] = "donor_site"
    with transaction(engine) as s:
        sites = {}
        for name, (lat, lon) in xy.items():
            sites[name] = s.execute(
                text("INSERT INTO sites (organization_id, name, kind, lat, lon, active, version, created_at, updated_at) "
                     "VALUES (:o, :n, :k, :la, :lo, true, 1, :t, :t) RETURNING id"),
                {"o": orgs[owner[name]].id, "n": name, "k": kind[name], "la": lat, "lo": lon, "t": utcnow()},
            ).scalar_one()  # fmt: skip
        items = {}
        for sku in ("N95", "KN95", "GLOVES"):
            items[sku] = s.execute(
                text("INSERT INTO items (sku, name, category, unit, pack_size, active, version, created_at, updated_at) "
                     "VALUES (:s, :s, 'ppe', 'each', 1, true, 1, :t, :t) RETURNING id"), {"s": sku, "t": utcnow()},
            ).scalar_one()  # fmt: skip
        s.execute(
            text("INSERT INTO item_substitutes (item_id, substitute_item_id, penalty) VALUES (:a, :b, 0.3)"),
            {"a": items["N95"], "b": items["KN95"]},
        )
    keys = {"logistics": factory.actor("logistics").headers}
    keys |= {org: factory.actor("requester", organization_id=orgs[org].id).headers for org in ("h1", "h2")}
    return {
        "orgs": {k: v.id for k, v in orgs.items()},
        "sites": sites,
        "site_ids": {v: k for k, v in sites.items()},
        "items": items,
        "keys": keys,
        "xy": {name: {"lat": lat, "lon": lon} for name, (lat, lon) in xy.items()},
    }


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
    Ledger.client, Ledger.engine, Ledger.world = client, fast, _world(engine, factory)
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
    elapsed = time.perf_counter() - started
    print(
        f"ledger state machine on {engine.dialect.name}: {Ledger.runs} sequences, "
        f"{Ledger.checks - Ledger.runs} steps, in {elapsed:.1f} s"
    )
    for (op, accepted), n in sorted(Ledger.outcomes.items()):
        print(f"  {op:60} {'accepted' if accepted else 'refused':9} {n}")
    assert Ledger.runs >= examples
    # every operation was both carried out and refused: the sequences reach deep states
    for op in COVERED if examples >= 100 else ():
        assert Ledger.outcomes[(op, True)] > 0, f"{op} never succeeded"
        assert Ledger.outcomes[(op, False)] > 0, f"{op} was never refused"
