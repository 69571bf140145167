"""Inventory lots and the movement ledger.

The ledger tests keep their OWN model of every lot's balances (plain arithmetic in the test), apply a
sequence of movements, some of which must be refused, and compare the service's answers with that
model after every step — never with sums computed from the code's own rows.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from app.db import transaction
from app.errors import DomainError
from app.inventory import service as inventory
from app.items import service as items
from app.items.models import ItemCreate
from app.principal import SYSTEM, Principal
from app.sites import service as sites
from app.sites.models import SiteCreate
from tests.conftest import Actor
from tests.factories import Factory

LOTS = "/v1/inventory/lots"
MOVES = "/v1/inventory/movements"


def _site(engine: Engine, organization_id: int, kind: str = "depot") -> int:
    data = SiteCreate(organization_id=organization_id, name=f"{kind} site", kind=kind, lat=40.7, lon=-74.0)  # type: ignore[arg-type]
    with transaction(engine) as s:
        return sites.create_site(s, actor=SYSTEM, data=data).id  # type: ignore[return-value]


def _item(engine: Engine, sku: str) -> int:
    with transaction(engine) as s:
        return items.create_item(s, actor=SYSTEM, data=ItemCreate(sku=sku, name=sku, category="ppe")).id  # type: ignore[arg-type,return-value]


def _depot(engine: Engine, factory: Factory, region: str = "north") -> int:
    return _site(engine, factory.org(kind="depot_operator", region=region).id)


def _receive(client: TestClient, actor: Actor, site_id: int, item_id: int, quantity: int, **extra: Any) -> Any:
    body = {"kind": "receive", "site_id": site_id, "item_id": item_id, "quantity": quantity} | extra
    return client.post(MOVES, json=body, headers=actor.headers)


def _adjust(client: TestClient, actor: Actor, lot_id: int, delta: int, headers: dict[str, str] | None = None) -> Any:
    body = {"kind": "adjust", "lot_id": lot_id, "delta": delta, "reason": "recount"}
    return client.post(MOVES, json=body, headers=actor.headers | (headers or {}))


def _field(r: Any) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json()["errors"][0]["field"]


def _movements(client: TestClient, actor: Actor, **params: Any) -> list[dict[str, Any]]:
    r = client.get(MOVES, params={"limit": 500, **params}, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _service_call(engine: Engine, fn: Callable[..., Any], **kw: Any) -> int:
    """Run one workflow movement in its own transaction, like a request would; 200 or the error's status."""
    try:
        with transaction(engine) as s:
            fn(s, actor=SYSTEM, **kw)
    except DomainError as exc:
        return exc.status
    return 200


def test_receive_opens_a_lot_and_joins_the_matching_one(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics = factory.actor("logistics")
    depot, item = _depot(engine, factory), _item(engine, "N95")
    expiry = "2027-03-01T00:00:00Z"
    r = _receive(client, logistics, depot, item, 100, lot_code="A1", expires_at=expiry, reason="truck 7")
    assert r.status_code == 201, r.text
    move = r.json()
    assert r.headers["Location"] == f"{MOVES}/{move['id']}"
    assert move["kind"] == "receive" and move["quantity"] == 100
    assert (move["delta_on_hand"], move["delta_reserved"], move["actor_key_id"]) == (100, 0, logistics.key_id)
    lot = client.get(f"{LOTS}/{move['lot_id']}", headers=logistics.headers)
    assert lot.status_code == 200 and lot.headers["ETag"] == '"v1"'
    assert {k: lot.json()[k] for k in ("site_id", "item_id", "lot_code", "on_hand", "reserved", "available")} == {
        "site_id": depot,
        "item_id": item,
        "lot_code": "A1",
        "on_hand": 100,
        "reserved": 0,
        "available": 100,
    }
    again = _receive(client, logistics, depot, item, 5, lot_code="A1", expires_at="2027-03-01T01:00:00+01:00")
    assert again.json()["lot_id"] == move["lot_id"]  # same instant, other offset: the same lot
    assert client.get(f"{LOTS}/{move['lot_id']}", headers=logistics.headers).headers["ETag"] == '"v2"'
    other = _receive(client, logistics, depot, item, 5, lot_code="A2", expires_at=expiry)
    uncoded = _receive(client, logistics, depot, item, 5)
    assert len({move["lot_id"], other.json()["lot_id"], uncoded.json()["lot_id"]}) == 3
    assert client.get(f"{MOVES}/{move['id']}", headers=logistics.headers).json() == move


def test_ledger_follows_an_independent_model(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics = factory.actor("logistics")
    depot, item = _depot(engine, factory), _item(engine, "N95")
    hospital_dock = _site(engine, factory.org(kind="hospital").id, kind="hospital_dock")
    a = _receive(client, logistics, depot, item, 100, lot_code="A").json()["lot_id"]
    b = _receive(client, logistics, depot, item, 30, lot_code="B").json()["lot_id"]
    model = {a: [100, 0], b: [30, 0]}  # lot -> [on_hand, reserved], by the test's own arithmetic
    moves = {a: 1, b: 1}

    def api(r: Any) -> int:
        return r.status_code

    def svc(fn: Callable[..., Any], lot_id: int, quantity: int) -> Callable[[], int]:
        return lambda: _service_call(engine, fn, lot_id=lot_id, quantity=quantity, reference="shipment:1")

    # (label, action returning a status, expected status, lot, Δon_hand, Δreserved)
    steps: list[tuple[str, Callable[[], int], int, int, int, int]] = [
        ("reserve 40", svc(inventory.reserve, a, 40), 200, a, 0, 40),
        ("reserve beyond available", svc(inventory.reserve, a, 61), 409, a, 0, 0),
        ("reserve the rest", svc(inventory.reserve, a, 60), 200, a, 0, 60),
        ("adjust below reserved", lambda: api(_adjust(client, logistics, a, -1)), 409, a, 0, 0),
        ("release 30", svc(inventory.release, a, 30), 200, a, 0, -30),
        ("release more than reserved", svc(inventory.release, a, 71), 409, a, 0, 0),
        ("ship 50", svc(inventory.ship, a, 50), 200, a, -50, -50),
        ("ship unreserved stock", svc(inventory.ship, a, 21), 409, a, 0, 0),
        ("adjust -30", lambda: api(_adjust(client, logistics, a, -30)), 201, a, -30, 0),
        ("return 10", svc(inventory.return_stock, a, 10), 200, a, 10, 0),
        ("adjust b below zero", lambda: api(_adjust(client, logistics, b, -31)), 409, b, 0, 0),
        ("adjust b to zero", lambda: api(_adjust(client, logistics, b, -30)), 201, b, -30, 0),
        ("ship from an empty lot", svc(inventory.ship, b, 1), 409, b, 0, 0),
        ("reserve zero", svc(inventory.reserve, a, 0), 422, a, 0, 0),
        ("receive zero", lambda: api(_receive(client, logistics, depot, item, 0, lot_code="A")), 422, a, 0, 0),
        ("receive at a hospital dock", lambda: api(_receive(client, logistics, hospital_dock, item, 5)), 422, a, 0, 0),
        ("adjust by zero", lambda: api(_adjust(client, logistics, a, 0)), 422, a, 0, 0),
        ("receive into b again", lambda: api(_receive(client, logistics, depot, item, 5, lot_code="B")), 201, b, 5, 0),
        ("ship the last reserved", svc(inventory.ship, a, 20), 200, a, -20, -20),
    ]
    for label, action, expected, lot, d_on_hand, d_reserved in steps:
        assert action() == expected, label
        if expected < 300:
            model[lot][0] += d_on_hand
            model[lot][1] += d_reserved
            moves[lot] += 1
        for lot_id, (on_hand, reserved) in model.items():
            got = client.get(f"{LOTS}/{lot_id}", headers=logistics.headers).json()
            assert (got["on_hand"], got["reserved"], got["available"]) == (on_hand, reserved, on_hand - reserved), label
            assert got["version"] == moves[lot_id], label  # one version per movement, none for refusals
            assert len(_movements(client, logistics, lot_id=lot_id)) == moves[lot_id], label
    assert model == {a: [10, 0], b: [5, 0]}  # the arithmetic above, spelled out

    # and the ledger's rows add up to the balances
    for lot_id, (on_hand, reserved) in model.items():
        rows = _movements(client, logistics, lot_id=lot_id)
        assert (sum(m["delta_on_hand"] for m in rows), sum(m["delta_reserved"] for m in rows)) == (on_hand, reserved)
    kinds = [m["kind"] for m in _movements(client, logistics, lot_id=a)]
    assert kinds == ["receive", "reserve", "reserve", "release", "ship", "adjust", "return", "ship"]


def test_random_movement_sequence_never_breaks_the_invariants(factory: Factory, engine: Engine) -> None:
    depot, item = _depot(engine, factory), _item(engine, "GLOVE")
    lots: dict[int, list[int]] = {}
    with transaction(engine) as s:
        for code in ("X", "Y"):
            lot, _ = inventory.receive(s, actor=SYSTEM, site_id=depot, item_id=item, quantity=50, lot_code=code)
            lots[lot.id] = [50, 0]  # type: ignore[index]
    rng = random.Random(20261122)
    ops = {
        "reserve": (inventory.reserve, lambda oh, rs, q: (0, q) if rs + q <= oh else None),
        "release": (inventory.release, lambda oh, rs, q: (0, -q) if q <= rs else None),
        "ship": (inventory.ship, lambda oh, rs, q: (-q, -q) if q <= rs else None),
        "return": (inventory.return_stock, lambda oh, rs, q: (q, 0)),
        "adjust": (inventory.adjust, lambda oh, rs, q: (q, 0) if oh + q >= rs else None),
    }
    for _ in range(120):
        lot_id = rng.choice(sorted(lots))
        name = rng.choice(sorted(ops))
        fn, rule = ops[name]
        q = rng.randint(-25, 25) if name == "adjust" else rng.randint(1, 30)
        if name == "adjust" and q == 0:
            continue
        on_hand, reserved = lots[lot_id]
        expected = rule(on_hand, reserved, q)
        kw: dict[str, Any] = {"delta": q, "reason": "count"} if name == "adjust" else {"quantity": q, "reference": "r"}
        status = _service_call(engine, fn, lot_id=lot_id, **kw)
        assert status == (200 if expected else 409), (name, q, on_hand, reserved)
        if expected:
            lots[lot_id] = [on_hand + expected[0], reserved + expected[1]]
    with transaction(engine) as s:
        for lot_id, (on_hand, reserved) in lots.items():
            lot = inventory.get_lot(s, lot_id=lot_id)
            assert (lot.on_hand, lot.reserved) == (on_hand, reserved)
            assert 0 <= lot.reserved <= lot.on_hand


def test_bad_movement_bodies_name_the_field_and_write_nothing(
    client: TestClient, factory: Factory, engine: Engine
) -> None:
    logistics = factory.actor("logistics")
    depot, item = _depot(engine, factory), _item(engine, "N95")
    donor_site = _site(engine, factory.org(kind="donor").id, kind="donor_site")
    cases = [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -5}, "quantity"),
        ({"quantity": "many"}, "quantity"),
        ({"site_id": 987654}, "site_id"),
        ({"item_id": 987654}, "item_id"),
        ({"site_id": donor_site}, "site_id"),
        ({"expires_at": "2027-01-01T00:00:00"}, "expires_at"),
        ({"colour": "red"}, "colour"),
        ({"kind": "reserve"}, "kind"),
        ({"kind": "ship"}, "kind"),
        ({"kind": None}, "kind"),
    ]
    for override, field in cases:
        body = {"kind": "receive", "site_id": depot, "item_id": item, "quantity": 10} | override
        r = client.post(MOVES, json=body, headers=logistics.headers)
        assert r.status_code == 422 and _field(r) == field, (override, r.text)
    missing = client.post(MOVES, json={"kind": "receive", "site_id": depot, "item_id": item}, headers=logistics.headers)
    assert missing.status_code == 422 and _field(missing) == "quantity"
    assert client.post(MOVES, json=[1], headers=logistics.headers).status_code == 422
    assert _movements(client, logistics) == []
    assert client.get(LOTS, params={"include_empty": True}, headers=logistics.headers).json()["items"] == []


def test_adjust_rules(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics = factory.actor("logistics")
    depot, item = _depot(engine, factory), _item(engine, "N95")
    lot = _receive(client, logistics, depot, item, 10).json()["lot_id"]
    assert _service_call(engine, inventory.reserve, lot_id=lot, quantity=8, reference="s") == 200
    below = _adjust(client, logistics, lot, -3)
    assert below.status_code == 409 and "reserved" in below.json()["detail"]
    assert _field(_adjust(client, logistics, lot, 0)) == "delta"
    no_reason = client.post(MOVES, json={"kind": "adjust", "lot_id": lot, "delta": 1}, headers=logistics.headers)
    assert _field(no_reason) == "reason"
    assert _field(_adjust(client, logistics, 987654, 1)) == "lot_id"
    stale = _adjust(client, logistics, lot, -2, headers={"If-Match": '"v1"'})
    assert stale.status_code == 412
    ok = _adjust(client, logistics, lot, -2, headers={"If-Match": '"v2"'})
    assert ok.status_code == 201 and ok.headers["X-Lot-ETag"] == '"v3"'
    got = client.get(f"{LOTS}/{lot}", headers=logistics.headers).json()
    assert (got["on_hand"], got["reserved"], got["available"]) == (8, 8, 0)


def test_only_logistics_writes_and_only_staff_read(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics, admin = factory.actor("logistics"), factory.actor("admin")
    depot, item = _depot(engine, factory), _item(engine, "N95")
    move = _receive(client, logistics, depot, item, 10).json()
    reads = [LOTS, f"{LOTS}/{move['lot_id']}", MOVES, f"{MOVES}/{move['id']}"]
    for path in reads:
        assert client.get(path, headers=admin.headers).status_code == 200, path
    assert _receive(client, admin, depot, item, 10).status_code == 403
    for role in ("requester", "donor", "driver"):
        outsider = factory.actor(role)
        for path in reads:
            assert client.get(path, headers=outsider.headers).status_code == 403, (role, path)
        assert _receive(client, outsider, depot, item, 10).status_code == 403, role
    assert len(_movements(client, logistics)) == 1


def test_every_movement_leaves_an_audit_event(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics, admin = factory.actor("logistics"), factory.actor("admin")
    depot, item = _depot(engine, factory), _item(engine, "N95")
    lot = _receive(client, logistics, depot, item, 10).json()["lot_id"]
    _adjust(client, logistics, lot, -4)
    _service_call(engine, inventory.reserve, lot_id=lot, quantity=2, reference="shipment:1")
    r = client.get(
        "/v1/audit-events", params={"object_type": "inventory_lots", "object_id": lot}, headers=admin.headers
    )
    events = r.json()["items"]
    assert [e["action"] for e in events] == ["inventory.receive", "inventory.adjust", "inventory.reserve"]
    assert events[1]["before"]["on_hand"] == 10 and events[1]["after"]["on_hand"] == 6
    assert events[1]["actor_key_id"] == logistics.key_id
    assert events[1]["after"]["movement"]["reason"] == "recount"
    assert events[2]["after"]["movement"]["reference"] == "shipment:1"


def test_lot_and_movement_filters(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics = factory.actor("logistics")
    north, south = _depot(engine, factory, "north"), _depot(engine, factory, "south")
    n95, gown = _item(engine, "N95"), _item(engine, "GOWN")
    soon = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    l1 = _receive(client, logistics, north, n95, 10, expires_at=soon).json()["lot_id"]
    l2 = _receive(client, logistics, north, gown, 10, expires_at=later).json()["lot_id"]
    l3 = _receive(client, logistics, south, n95, 10).json()["lot_id"]
    _adjust(client, logistics, l3, -10)

    def lots(**params: Any) -> list[int]:
        r = client.get(LOTS, params=params, headers=logistics.headers)
        assert r.status_code == 200, r.text
        return [lot["id"] for lot in r.json()["items"]]

    assert lots() == [l1, l2]  # empty lots are history: hidden unless asked for
    assert lots(include_empty=True) == [l1, l2, l3]
    assert lots(site_id=north) == [l1, l2]
    assert lots(item_id=n95, include_empty=True) == [l1, l3]
    assert lots(region="south", include_empty=True) == [l3]
    assert lots(region="nowhere") == []
    assert lots(expiring_before=(datetime.now(UTC) + timedelta(days=30)).isoformat()) == [l1]
    bad = client.get(LOTS, params={"expiring_before": "2027-01-01T00:00:00"}, headers=logistics.headers)
    assert bad.status_code == 422 and _field(bad) == "expiring_before"
    assert [m["lot_id"] for m in _movements(client, logistics, kind="adjust")] == [l3]
    assert {m["lot_id"] for m in _movements(client, logistics, site_id=south)} == {l3}
    assert {m["lot_id"] for m in _movements(client, logistics, item_id=n95)} == {l1, l3}
    assert _field(client.get(MOVES, params={"kind": "teleport"}, headers=logistics.headers)) == "kind"
    page = client.get(LOTS, params={"limit": 1}, headers=logistics.headers).json()
    rest = client.get(LOTS, params={"limit": 1, "cursor": page["next_cursor"]}, headers=logistics.headers).json()
    assert [page["items"][0]["id"], rest["items"][0]["id"]] == [l1, l2] and rest["next_cursor"] is None


def test_allocatable_lots_are_unexpired_available_and_at_active_depots(factory: Factory, engine: Engine) -> None:
    a, b = _depot(engine, factory), _depot(engine, factory)
    n95, gown = _item(engine, "N95"), _item(engine, "GOWN")
    now = datetime.now(UTC)
    with transaction(engine) as s:

        def rcv(site: int, item: int, qty: int, **kw: Any) -> int:
            return inventory.receive(s, actor=SYSTEM, site_id=site, item_id=item, quantity=qty, **kw)[0].id  # type: ignore[return-value]

        good = rcv(a, n95, 10, expires_at=now + timedelta(days=30))
        expired = rcv(a, n95, 10, expires_at=now - timedelta(days=1))
        reserved = rcv(a, gown, 10)
        inventory.reserve(s, actor=SYSTEM, lot_id=reserved, quantity=10, reference="s")
        partly = rcv(a, gown, 10, lot_code="P")
        inventory.reserve(s, actor=SYSTEM, lot_id=partly, quantity=4, reference="s")
        rcv(b, n95, 10)  # then its depot closes
        sites.set_active(s, actor=SYSTEM, site_id=b, active=False)
    with transaction(engine) as s:
        assert [lot.id for lot in inventory.allocatable_lots(s, now=now)] == [good, partly]
        assert [lot.id for lot in inventory.allocatable_lots(s, now=now, item_ids=[gown])] == [partly]
        assert inventory.allocatable_lots(s, now=now, site_ids=[b]) == []
        assert [lot.id for lot in inventory.allocatable_lots(s, now=now - timedelta(days=2), item_ids=[n95])] == [
            good,
            expired,
        ]
        with pytest.raises(DomainError) as exc:
            inventory.reserve(s, actor=SYSTEM, lot_id=expired, quantity=1, reference="s")
        assert exc.value.status == 409


def test_database_checks_are_the_second_line_of_defence(factory: Factory, engine: Engine) -> None:
    depot, item = _depot(engine, factory), _item(engine, "N95")
    with transaction(engine) as s:
        lot, _ = inventory.receive(s, actor=SYSTEM, site_id=depot, item_id=item, quantity=5)
    for sql in (
        "UPDATE inventory_lots SET reserved = 6 WHERE id = :id",
        "UPDATE inventory_lots SET on_hand = -1, reserved = 0 WHERE id = :id",
        "UPDATE inventory_lots SET reserved = -1 WHERE id = :id",
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(sql), {"id": lot.id})


def test_concurrent_adjustments_lose_no_update(factory: Factory, engine: Engine) -> None:
    """PostgreSQL: the row lock; SQLite: BEGIN IMMEDIATE serializes writers. Either way none is lost."""
    depot, item = _depot(engine, factory), _item(engine, "N95")
    with transaction(engine) as s:
        lot, _ = inventory.receive(s, actor=SYSTEM, site_id=depot, item_id=item, quantity=1)
    actor = Principal(key_id=None, name="t", role="logistics", organization_id=None)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                with transaction(engine) as s:
                    inventory.adjust(s, actor=actor, lot_id=lot.id, delta=1, reason="count")  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with transaction(engine) as s:
        final = inventory.get_lot(s, lot_id=lot.id)  # type: ignore[arg-type]
        assert (final.on_hand, final.version) == (31, 31)
