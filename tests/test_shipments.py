"""Shipments: transitions and their effects on lots, the ledger, pledges and request lines (checked
against expected values worked out by hand, and the ledger against the lots), visibility per role,
ETag/304, and the change feed (paging, concurrent writers, long-poll)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from app.db import transaction
from app.inventory.models import InventoryLot, InventoryMovement
from app.keys import service as keys
from app.pledges.models import Pledge
from app.principal import SYSTEM
from app.requests.models import RequestLine, SupplyRequest
from app.shipments import service as shipments_service
from app.shipments.models import Shipment
from tests.conftest import Actor
from tests.factories import Factory
from tests.plan_world import LOGISTICS, World, approve, build_world, plan_dict, snapshot, store_run, the_plan


@dataclass
class Setup:
    w: World
    logistics: Actor
    s_a: int  # depot → A: lot-N 80 for a1
    s_b: int  # depot → B: lot-N 20 + lot-K 30 for b1
    s_p: int  # donor site → A: pledge 30 for a2
    run_id: int


def approved(client: TestClient, factory: Factory) -> Setup:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    run_id = store_run(w.engine, snapshot(w), the_plan(w))
    logistics = factory.actor("logistics")
    r = approve(client, run_id, logistics.headers)
    assert r.status_code == 200, r.text
    with transaction(w.engine) as s:
        rows = s.exec(select(Shipment)).all()
    by_route = {(x.origin_site_id, x.destination_site_id): x.id or 0 for x in rows}
    return Setup(
        w,
        logistics,
        by_route[(w.depot.id, w.site_a.id)],
        by_route[(w.depot.id, w.site_b.id)],
        by_route[(w.donor_site.id, w.site_a.id)],
        run_id,
    )


def event(client: TestClient, actor: Actor, shipment_id: int, status: str, **body: Any) -> Any:
    return client.post(f"/v1/shipments/{shipment_id}/events", json={"status": status, **body}, headers=actor.headers)


def ok(r: Any) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return r.json()


def state(w: World) -> dict[str, Any]:
    """Lots (on_hand, reserved), the pledge's committed units, lines (reserved, in transit, delivered, status)."""
    with transaction(w.engine) as s:
        lots = {i: s.get(InventoryLot, i) for i in (w.lot_n, w.lot_k)}
        lines = {i: s.get(RequestLine, i) for i in (w.a1, w.a2, w.b1)}
        headers = {i: s.get(SupplyRequest, i) for i in (w.request_a, w.request_b)}
        pledge = s.get(Pledge, w.pledge)
        assert pledge is not None
        ledger = {
            lot_id: (on_hand, reserved)
            for lot_id, on_hand, reserved in s.exec(
                select(
                    InventoryMovement.lot_id,
                    func.sum(InventoryMovement.delta_on_hand),
                    func.sum(InventoryMovement.delta_reserved),
                ).group_by(InventoryMovement.lot_id)
            ).all()
        }
    # balances always equal the ledger's sums
    for lot_id, lot in lots.items():
        assert lot is not None and ledger[lot_id] == (lot.on_hand, lot.reserved)
    return {
        "lots": {i: (x.on_hand, x.reserved) for i, x in lots.items() if x},
        "committed": pledge.committed,
        "lines": {
            i: (x.quantity_reserved, x.quantity_in_transit, x.quantity_delivered, x.status)
            for i, x in lines.items()
            if x
        },
        "requests": {i: x.status for i, x in headers.items() if x},
    }


def test_transitions_move_stock_pledges_and_request_lines(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    w, lg = x.w, x.logistics
    expected = {
        "lots": {w.lot_n: (100, 100), w.lot_k: (50, 30)},
        "committed": 30,
        "lines": {
            w.a1: (80, 0, 0, "allocated"),
            w.a2: (30, 0, 0, "allocated"),
            w.b1: (50, 0, 0, "partially_allocated"),
        },
        "requests": {w.request_a: "partially_allocated", w.request_b: "partially_allocated"},  # a's gloves line is open
    }
    assert state(w) == expected

    # planned → delivered / in_transit / returned are not transitions
    for status in ("delivered", "in_transit", "returned", "failed", "planned"):
        r = event(client, lg, x.s_a, status)
        assert r.status_code == 409, (status, r.text)
    assert state(w) == expected

    # dispatch: 80 leave the depot through the ledger; a1's 80 move from reserved to in transit
    shipped = ok(event(client, lg, x.s_a, "dispatched", lat=40.7, lon=-74.0, note="left dock 3"))
    assert shipped["status"] == "dispatched" and shipped["version"] == 2
    expected["lots"][w.lot_n] = (20, 20)
    expected["lines"][w.a1] = (0, 80, 0, "allocated")
    assert state(w) == expected
    ok(event(client, lg, x.s_a, "in_transit"))
    assert state(w) == expected

    # bad deliveries change nothing
    line = shipped["lines"][0]
    short = event(client, lg, x.s_a, "delivered", lines=[{"line_id": line["id"], "quantity_received": 70}])
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "lines[0].shortfall_reason"
    over = event(client, lg, x.s_a, "delivered", lines=[{"line_id": line["id"], "quantity_received": 81}])
    assert over.status_code == 422 and over.json()["errors"][0]["field"] == "lines[0].quantity_received"
    alien = event(client, lg, x.s_a, "delivered", lines=[{"line_id": 999999, "quantity_received": 1}])
    assert alien.status_code == 422 and alien.json()["errors"][0]["field"] == "lines[0].line_id"
    naive = event(client, lg, x.s_a, "delivered", at="2026-01-01T10:00:00")
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "at"
    assert state(w) == expected

    # partial delivery: 70 arrive, 10 damaged go back to a1's remaining
    receipt = {"line_id": line["id"], "quantity_received": 70, "shortfall_reason": "damaged"}
    done = ok(event(client, lg, x.s_a, "delivered", lines=[receipt], received_by="J. Doe, receiving"))
    assert done["received_by"] == "J. Doe, receiving"
    assert (done["lines"][0]["quantity_received"], done["lines"][0]["shortfall_reason"]) == (70, "damaged")
    expected["lines"][w.a1] = (0, 0, 70, "partially_fulfilled")
    expected["requests"][w.request_a] = "partially_fulfilled"
    assert state(w) == expected
    for status in ("failed", "returned", "dispatched", "cancelled", "delivered"):
        assert event(client, lg, x.s_a, status).status_code == 409

    # cancel before dispatch: both lots' reservations released, b1 is open again
    ok(event(client, lg, x.s_b, "cancelled", note="truck broke down"))
    expected["lots"] = {w.lot_n: (20, 0), w.lot_k: (50, 0)}
    expected["lines"][w.b1] = (0, 0, 0, "open")
    expected["requests"][w.request_b] = "open"
    assert state(w) == expected
    assert event(client, lg, x.s_b, "dispatched").status_code == 409

    # a pledge shipment: no depot stock moves; failure returns a2's quantity; return uncommits the pledge
    ok(event(client, lg, x.s_p, "dispatched"))
    expected["lines"][w.a2] = (0, 30, 0, "allocated")
    assert state(w) == expected
    assert event(client, lg, x.s_p, "returned").status_code == 409  # only a failed shipment returns
    ok(event(client, lg, x.s_p, "failed", note="road closed"))
    expected["lines"][w.a2] = (0, 0, 0, "open")
    assert state(w) == expected
    ok(event(client, lg, x.s_p, "returned"))
    expected["committed"] = 0
    assert state(w) == expected

    # a depot shipment that fails and returns: its units are back on hand at the lot
    snap = snapshot(w)
    rerun = store_run(w.engine, snap, plan_dict(snap, [(f"lot-{w.lot_k}", f"line-{w.b1}", 30)]))
    again = ok(approve(client, rerun, lg.headers))
    s_k = again["shipment_ids"][0]
    ok(event(client, lg, s_k, "dispatched"))
    expected["lots"][w.lot_k] = (20, 0)
    expected["lines"][w.b1] = (0, 30, 0, "partially_allocated")
    expected["requests"][w.request_b] = "partially_allocated"
    assert state(w) == expected
    ok(event(client, lg, s_k, "failed"))
    expected["lines"][w.b1] = (0, 0, 0, "open")
    expected["requests"][w.request_b] = "open"
    assert state(w) == expected
    ok(event(client, lg, s_k, "returned", note="back at depot"))
    expected["lots"][w.lot_k] = (50, 0)
    assert state(w) == expected
    with transaction(w.engine) as s:
        kinds = s.exec(select(InventoryMovement.kind).where(InventoryMovement.lot_id == w.lot_k)).all()
    assert kinds == ["receive", "reserve", "release", "reserve", "ship", "return"]

    history = client.get(f"/v1/shipments/{x.s_a}/events", headers=lg.headers).json()["items"]
    assert [e["status"] for e in history] == ["planned", "dispatched", "in_transit", "delivered"]
    assert history[1]["note"] == "left dock 3" and (history[1]["lat"], history[1]["lon"]) == (40.7, -74.0)


def test_drivers_see_and_report_only_their_shipments(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    lg = x.logistics
    driver, other_driver = factory.actor("driver"), factory.actor("driver")

    assign = client.post(f"/v1/shipments/{x.s_a}/assign", json={"driver_key_id": driver.key_id}, headers=lg.headers)
    assert ok(assign)["driver_key_id"] == driver.key_id
    not_a_driver = factory.actor("requester")
    bad = client.post(f"/v1/shipments/{x.s_b}/assign", json={"driver_key_id": not_a_driver.key_id}, headers=lg.headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "driver_key_id"
    revoked = factory.actor("driver")
    with transaction(x.w.engine) as s:
        keys.revoke_key(s, actor=SYSTEM, key_id=revoked.key_id)
    gone = client.post(f"/v1/shipments/{x.s_b}/assign", json={"driver_key_id": revoked.key_id}, headers=lg.headers)
    assert gone.status_code == 422
    body = {"driver_key_id": driver.key_id}
    assert client.post(f"/v1/shipments/{x.s_b}/assign", json=body, headers=driver.headers).status_code == 403

    assert [s["id"] for s in client.get("/v1/shipments", headers=driver.headers).json()["items"]] == [x.s_a]
    assert client.get(f"/v1/shipments/{x.s_a}", headers=driver.headers).status_code == 200
    assert client.get(f"/v1/shipments/{x.s_b}", headers=driver.headers).status_code == 404
    assert event(client, driver, x.s_b, "dispatched").status_code == 404
    assert client.get(f"/v1/shipments/{x.s_a}", headers=other_driver.headers).status_code == 404
    assert event(client, other_driver, x.s_a, "dispatched").status_code == 404
    assert client.get("/v1/shipments", headers=other_driver.headers).json()["items"] == []
    assert event(client, driver, x.s_a, "cancelled").status_code == 403  # cancelling is logistics' call

    reported = ok(event(client, driver, x.s_a, "dispatched", lat=40.71, lon=-74.01))
    assert reported["status"] == "dispatched"
    history = client.get(f"/v1/shipments/{x.s_a}/events", headers=driver.headers).json()["items"]
    assert [(e["status"], e["actor_key_id"]) for e in history][-1] == ("dispatched", driver.key_id)
    assert history[1]["note"] == f"driver assigned: key {driver.key_id}"

    # drivers read the sites of their shipments, and only those
    assert client.get(f"/v1/sites/{x.w.depot.id}", headers=driver.headers).status_code == 200
    assert client.get(f"/v1/sites/{x.w.site_a.id}", headers=driver.headers).status_code == 200
    assert client.get(f"/v1/sites/{x.w.site_b.id}", headers=driver.headers).status_code == 404
    assert client.get(f"/v1/sites/{x.w.depot.id}", headers=other_driver.headers).status_code == 404

    for role in ("admin", "requester", "donor"):
        assert event(client, factory.actor(role), x.s_a, "in_transit").status_code == 403


def test_requesters_and_donors_see_their_own_shipments(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    requester_a = factory.actor("requester", organization_id=x.w.org_a)
    requester_b = factory.actor("requester", organization_id=x.w.org_b)
    donor = factory.actor("donor", organization_id=x.w.donor_org)
    stranger = factory.actor("donor")

    def ids(actor: Actor) -> list[int]:
        r = client.get("/v1/shipments", headers=actor.headers)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["items"]]

    assert ids(requester_a) == sorted([x.s_a, x.s_p]) and ids(requester_b) == [x.s_b]
    assert ids(donor) == [x.s_p] and ids(stranger) == []
    assert ids(factory.actor("admin")) == sorted([x.s_a, x.s_b, x.s_p])
    assert client.get(f"/v1/shipments/{x.s_b}", headers=requester_a.headers).status_code == 404
    assert client.get(f"/v1/shipments/{x.s_b}/events", headers=requester_a.headers).status_code == 404
    assert client.get(f"/v1/shipments/{x.s_p}", headers=donor.headers).status_code == 200
    assert client.get(f"/v1/shipments/{x.s_a}", headers=donor.headers).status_code == 404
    assert client.get(f"/v1/shipments/{x.s_p}", headers=stranger.headers).status_code == 404
    filtered = client.get("/v1/shipments", params={"destination_site_id": x.w.site_a.id}, headers=x.logistics.headers)
    assert [s["id"] for s in filtered.json()["items"]] == sorted([x.s_a, x.s_p])


def test_etag_and_if_none_match(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    h = x.logistics.headers
    first = client.get(f"/v1/shipments/{x.s_a}", headers=h)
    etag = first.headers["ETag"]
    assert etag == '"v1"'
    cached = client.get(f"/v1/shipments/{x.s_a}", headers=h | {"If-None-Match": etag})
    assert cached.status_code == 304 and cached.headers["ETag"] == etag
    assert client.get(f"/v1/shipments/{x.s_a}", headers=h | {"If-None-Match": f'W/"v0", {etag}'}).status_code == 304
    stale = client.post(
        f"/v1/shipments/{x.s_a}/events", json={"status": "dispatched"}, headers=h | {"If-Match": '"v7"'}
    )
    assert stale.status_code == 412
    moved = client.post(f"/v1/shipments/{x.s_a}/events", json={"status": "dispatched"}, headers=h | {"If-Match": etag})
    assert moved.status_code == 201 and moved.headers["ETag"] == '"v2"'
    fresh = client.get(f"/v1/shipments/{x.s_a}", headers=h | {"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json()["status"] == "dispatched"


# ---------------------------------------------------------------- change feed


def feed(client: TestClient, actor: Actor, cursor: str, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/shipments", params={"updated_since": cursor, **params}, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()


def assign(engine: Engine, shipment_id: int, driver_key_id: int | None) -> None:
    with transaction(engine) as s:
        shipments_service.assign_driver(s, actor=LOGISTICS, shipment_id=shipment_id, driver_key_id=driver_key_id)


def test_feed_pages_through_exactly_the_updates_made(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    lg = x.logistics
    page = feed(client, lg, "0", limit=2)
    assert [s["id"] for s in page["items"]] == sorted([x.s_a, x.s_b, x.s_p])[:2] and page["has_more"]
    rest = feed(client, lg, page["next_cursor"], limit=2)
    assert len(rest["items"]) == 1 and not rest["has_more"]
    empty = feed(client, lg, rest["next_cursor"])
    assert empty == {"items": [], "next_cursor": rest["next_cursor"], "has_more": False}
    assert client.get("/v1/shipments", params={"updated_since": "bogus"}, headers=lg.headers).status_code == 422

    drivers = [factory.actor("driver"), factory.actor("driver")]
    rng = random.Random(4)
    cursor, pending = rest["next_cursor"], {}
    current = {x.s_a: None, x.s_b: None, x.s_p: None}
    for step in range(30):
        shipment_id = rng.choice(sorted(current))
        choices = [d.key_id for d in drivers if d.key_id != current[shipment_id]] + [None]
        driver_key = rng.choice([c for c in choices if c != current[shipment_id]])
        assign(x.w.engine, shipment_id, driver_key)
        current[shipment_id] = driver_key
        with transaction(x.w.engine) as s:
            pending[shipment_id] = s.get(Shipment, shipment_id).version  # type: ignore[union-attr]
        if rng.random() < 0.4 or step == 29:
            seen: dict[int, int] = {}
            seqs: list[int] = []
            while True:
                got = feed(client, lg, cursor, limit=1)
                for item in got["items"]:
                    assert item["id"] not in seen, "an update was repeated"
                    seen[item["id"]] = item["version"]
                    seqs.append(item["change_seq"])
                cursor = got["next_cursor"]
                if not got["has_more"]:
                    break
            assert seen == pending and seqs == sorted(seqs)
            pending = {}
    # a driver's feed holds only what is assigned to it now
    mine = feed(client, drivers[0], "0")["items"]
    assert {s["id"] for s in mine} == {i for i, d in current.items() if d == drivers[0].key_id}


def test_feed_never_misses_an_update_under_concurrent_writers(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    driver = factory.actor("driver")
    engine = x.w.engine
    targets = [x.s_a, x.s_b, x.s_p]
    done = threading.Event()
    seen: dict[int, int] = {}
    seqs: list[int] = []

    def read(after: int) -> int:
        with transaction(engine) as s:
            rows = shipments_service.changed_since(
                s, principal=LOGISTICS, after=after, limit=500, filters=shipments_service.Filters()
            )
        for row in rows:
            seen[row.id or 0] = row.version
            seqs.append(row.change_seq)
            after = row.change_seq
        return after

    def writer(shipment_id: int) -> None:
        for i in range(12):
            assign(engine, shipment_id, driver.key_id if i % 2 == 0 else None)

    cursor = read(0)
    threads = [threading.Thread(target=writer, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        cursor = read(cursor)
    for t in threads:
        t.join()
    done.set()
    read(cursor)
    with transaction(engine) as s:
        final = {i: s.get(Shipment, i).version for i in targets}  # type: ignore[union-attr]
    assert {i: seen[i] for i in targets} == final == {i: 13 for i in targets}
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)


def test_long_poll_returns_as_soon_as_something_changes(client: TestClient, factory: Factory) -> None:
    x = approved(client, factory)
    lg = x.logistics
    cursor = feed(client, lg, "0")["next_cursor"]

    started = time.monotonic()
    quiet = feed(client, lg, cursor, wait=0.6)
    assert quiet == {"items": [], "next_cursor": cursor, "has_more": False}
    assert 0.5 <= time.monotonic() - started < 3

    driver = factory.actor("driver")
    later = threading.Timer(0.5, assign, args=(x.w.engine, x.s_b, driver.key_id))
    started = time.monotonic()
    later.start()
    woke = feed(client, lg, cursor, wait=20)
    elapsed = time.monotonic() - started
    later.join()
    assert [s["id"] for s in woke["items"]] == [x.s_b] and woke["items"][0]["driver_key_id"] == driver.key_id
    assert 0.4 <= elapsed < 5, elapsed
    too_long = client.get("/v1/shipments", params={"updated_since": cursor, "wait": 31}, headers=lg.headers)
    assert too_long.status_code == 422
