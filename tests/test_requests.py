from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent
from app.db import transaction
from app.items.models import Item
from app.requests import service
from app.requests.models import RequestLine, SupplyRequest
from app.requests.status import line_status, summarize_status
from app.sites.models import Site
from tests.conftest import Actor
from tests.factories import Factory

_seq = itertools.count(1)
SOON = (datetime.now(UTC) + timedelta(days=2)).isoformat()


def make_site(engine: Engine, organization_id: int | None, kind: str = "hospital_dock", active: bool = True) -> int:
    assert organization_id is not None
    site = Site(
        organization_id=organization_id, name=f"site-{next(_seq)}", kind=kind, lat=40.7, lon=-74.0, active=active
    )
    with transaction(engine) as s:
        s.add(site)
        s.flush()
        return site.id  # type: ignore[return-value]


def make_item(engine: Engine, active: bool = True) -> int:
    item = Item(sku=f"SKU-{next(_seq)}", name="N95 respirator", category="ppe", active=active)
    with transaction(engine) as s:
        s.add(item)
        s.flush()
        return item.id  # type: ignore[return-value]


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def audit_actions(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))).all())


def set_line(engine: Engine, line_id: int, **values: int) -> None:
    """Simulates the allocation workflow moving stock onto a line."""
    with transaction(engine) as s:
        line = s.get(RequestLine, line_id)
        assert line is not None
        for key, value in values.items():
            setattr(line, key, value)
        s.add(line)


def body(site_id: Any, *lines: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"site_id": site_id, "justification": "ICU surge", "lines": list(lines), **extra}


def line(item_id: int, quantity: Any = 100, priority: str = "high", **extra: Any) -> dict[str, Any]:
    return {"item_id": item_id, "quantity": quantity, "priority": priority, **extra}


@pytest.fixture
def world(factory: Factory, engine: Engine) -> dict[str, Any]:
    requester = factory.actor("requester")
    return {
        "requester": requester,
        "site": make_site(engine, requester.organization_id),
        "item": make_item(engine),
        "item2": make_item(engine),
    }


def post(client: TestClient, actor: Actor, payload: dict[str, Any]) -> Any:
    return client.post("/v1/requests", json=payload, headers=actor.headers)


def test_requester_creates_and_reads_request(client: TestClient, world: dict[str, Any]) -> None:
    req = world["requester"]
    r = post(
        client, req, body(world["site"], line(world["item"], 300, "critical", needed_by=SOON), line(world["item2"]))
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["Location"] == f"/v1/requests/{created['id']}"
    assert r.headers["ETag"] == '"v1"'
    assert created["organization_id"] == req.organization_id and created["status"] == "open"
    first = created["lines"][0]
    assert (first["quantity"], first["priority"], first["status"], first["remaining"]) == (300, "critical", "open", 300)
    got = client.get(f"/v1/requests/{created['id']}", headers=req.headers)
    assert got.status_code == 200 and got.json() == created
    again = client.get(f"/v1/requests/{created['id']}", headers=req.headers | {"If-None-Match": '"v1"'})
    assert again.status_code == 304
    listed = client.get("/v1/requests", headers=req.headers).json()
    assert [x["id"] for x in listed["items"]] == [created["id"]]


@pytest.mark.parametrize(
    ("bad_line", "field"),
    [
        ({"quantity": 0}, "lines[0].quantity"),
        ({"quantity": -5}, "lines[0].quantity"),
        ({"quantity": "many"}, "lines[0].quantity"),
        ({"quantity": 2.5}, "lines[0].quantity"),
        ({"item_id": 999_999}, "lines[0].item_id"),
        ({"item_id": "n95"}, "lines[0].item_id"),
        ({"priority": "urgent"}, "lines[0].priority"),
        ({"needed_by": "2030-01-01T00:00:00"}, "lines[0].needed_by"),
        ({"needed_by": "2020-01-01T00:00:00Z"}, "lines[0].needed_by"),
        ({"colour": "red"}, "lines[0].colour"),
    ],
)
def test_bad_line_is_rejected_naming_the_field(
    client: TestClient, engine: Engine, world: dict[str, Any], bad_line: dict[str, Any], field: str
) -> None:
    r = post(client, world["requester"], body(world["site"], line(world["item"]) | bad_line))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]]
    assert count(engine, SupplyRequest) == count(engine, RequestLine) == 0
    assert "request.create" not in audit_actions(engine)


def test_bad_second_line_and_missing_lines(client: TestClient, engine: Engine, world: dict[str, Any]) -> None:
    req, site, item = world["requester"], world["site"], world["item"]
    r = post(client, req, body(site, line(item), line(999_999)))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lines[1].item_id"
    for payload, field in [
        ({"site_id": site}, "lines"),
        (body(site), "lines"),
        ({"lines": [line(item)]}, "site_id"),
        (body("dock"), "site_id"),
    ]:
        r = post(client, req, payload)
        assert r.status_code == 422, payload
        assert r.json()["errors"][0]["field"] == field
    r = post(client, req, body(site, *[line(item)] * 1001))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lines"
    inactive_item = make_item(engine, active=False)
    r = post(client, req, body(site, line(inactive_item)))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lines[0].item_id"
    assert count(engine, SupplyRequest) == count(engine, RequestLine) == 0


def test_delivery_site_must_be_own_dock_or_food_hub(
    client: TestClient, engine: Engine, factory: Factory, world: dict[str, Any]
) -> None:
    req, item = world["requester"], world["item"]
    other_org = factory.org()
    bad_sites = [
        999_999,
        make_site(engine, other_org.id),
        make_site(engine, req.organization_id, kind="depot"),
        make_site(engine, req.organization_id, active=False),
    ]
    for site_id in bad_sites:
        r = post(client, req, body(site_id, line(item)))
        assert r.status_code == 422, site_id
        assert r.json()["errors"][0]["field"] == "site_id"
    assert count(engine, SupplyRequest) == 0
    hub = make_site(engine, req.organization_id, kind="food_hub")
    assert post(client, req, body(hub, line(item))).status_code == 201


def test_requester_posts_only_for_own_organization(client: TestClient, factory: Factory, world: dict[str, Any]) -> None:
    req = world["requester"]
    other = factory.org()
    r = post(client, req, body(world["site"], line(world["item"]), organization_id=other.id))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "organization_id"
    r = post(client, req, body(world["site"], line(world["item"]), organization_id=req.organization_id))
    assert r.status_code == 201


def test_roles(client: TestClient, factory: Factory, world: dict[str, Any]) -> None:
    payload = body(world["site"], line(world["item"]))
    created = post(client, world["requester"], payload).json()
    for role in ("admin", "logistics", "donor", "driver"):
        assert post(client, factory.actor(role), payload).status_code == 403, role
    for role in ("donor", "driver"):
        actor = factory.actor(role)
        assert client.get("/v1/requests", headers=actor.headers).status_code == 403
        assert client.get(f"/v1/requests/{created['id']}", headers=actor.headers).status_code == 403
    for role in ("admin", "logistics"):
        actor = factory.actor(role)
        assert [x["id"] for x in client.get("/v1/requests", headers=actor.headers).json()["items"]] == [created["id"]]
        assert client.patch(f"/v1/requests/{created['id']}", json={}, headers=actor.headers).status_code == 403
    admin = factory.actor("admin")
    assert client.post(f"/v1/requests/{created['id']}/cancel", headers=admin.headers).status_code == 403
    logistics = factory.actor("logistics")
    r = client.post(f"/v1/requests/{created['id']}/cancel", headers=logistics.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_other_organization_gets_404_and_never_sees_it(
    client: TestClient, factory: Factory, world: dict[str, Any]
) -> None:
    created = post(client, world["requester"], body(world["site"], line(world["item"]))).json()
    rid, lid = created["id"], created["lines"][0]["id"]
    stranger = factory.actor("requester")
    h = stranger.headers
    assert client.get(f"/v1/requests/{rid}", headers=h).status_code == 404
    assert client.patch(f"/v1/requests/{rid}", json={"justification": "x"}, headers=h).status_code == 404
    assert client.patch(f"/v1/requests/{rid}/lines/{lid}", json={"quantity": 1}, headers=h).status_code == 404
    assert client.post(f"/v1/requests/{rid}/lines/{lid}/cancel", headers=h).status_code == 404
    assert client.post(f"/v1/requests/{rid}/cancel", headers=h).status_code == 404
    assert client.get("/v1/requests", headers=h).json()["items"] == []
    params = {"organization_id": world["requester"].organization_id}
    assert client.get("/v1/requests", params=params, headers=h).json()["items"] == []
    owner = client.get(f"/v1/requests/{rid}", headers=world["requester"].headers).json()
    assert owner["status"] == "open" and owner["lines"][0]["quantity"] == 100


def test_edit_while_open_then_409(client: TestClient, engine: Engine, world: dict[str, Any]) -> None:
    req = world["requester"]
    created = post(client, req, body(world["site"], line(world["item"]), line(world["item2"]))).json()
    rid, (l1, l2) = created["id"], [x["id"] for x in created["lines"]]
    hub = make_site(engine, req.organization_id, kind="food_hub")
    r = client.patch(
        f"/v1/requests/{rid}",
        json={"site_id": hub, "justification": "ward 3"},
        headers=req.headers | {"If-Match": '"v1"'},
    )
    assert r.status_code == 200 and r.json()["site_id"] == hub and r.headers["ETag"] == '"v2"'
    stale = client.patch(f"/v1/requests/{rid}", json={"justification": "y"}, headers=req.headers | {"If-Match": '"v1"'})
    assert stale.status_code == 412
    r = client.patch(
        f"/v1/requests/{rid}/lines/{l1}",
        json={"quantity": 40, "priority": "critical", "needed_by": SOON},
        headers=req.headers | {"If-Match": '"v2"'},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["lines"][0]["quantity"], r.json()["lines"][0]["priority"], r.json()["version"]) == (
        40,
        "critical",
        3,
    )
    for patch, field in [
        ({"quantity": 0}, "quantity"),
        ({"quantity": None}, "quantity"),
        ({"needed_by": "2001-01-01T00:00:00Z"}, "needed_by"),
    ]:
        r = client.patch(f"/v1/requests/{rid}/lines/{l1}", json=patch, headers=req.headers | {"If-Match": '"v3"'})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field
    r = client.patch(
        f"/v1/requests/{rid}",
        json={"site_id": make_site(engine, req.organization_id, kind="depot")},
        headers=req.headers | {"If-Match": '"v3"'},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "site_id"

    set_line(engine, l1, quantity_reserved=10)  # the workflow reserved stock for line 1
    r = client.patch(f"/v1/requests/{rid}/lines/{l1}", json={"quantity": 5}, headers=req.headers | {"If-Match": '"v3"'})
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    z = client.patch(f"/v1/requests/{rid}", json={"justification": "z"}, headers=req.headers | {"If-Match": '"v3"'})
    assert z.status_code == 409
    r = client.patch(f"/v1/requests/{rid}/lines/{l2}", json={"quantity": 7}, headers=req.headers | {"If-Match": '"v3"'})
    assert r.status_code == 200
    lines = {x["id"]: x for x in r.json()["lines"]}
    assert lines[l1]["status"] == "partially_allocated" and lines[l1]["quantity"] == 40
    assert lines[l2]["quantity"] == 7 and r.json()["status"] == "partially_allocated"
    missing = client.patch(
        f"/v1/requests/{rid}/lines/999999", json={"quantity": 1}, headers=req.headers | {"If-Match": '"v4"'}
    )
    assert missing.status_code == 404


def test_cancel_rules(client: TestClient, engine: Engine, world: dict[str, Any]) -> None:
    req = world["requester"]
    created = post(
        client, req, body(world["site"], line(world["item"]), line(world["item2"]), line(world["item"]))
    ).json()
    rid, (l1, _l2, l3) = created["id"], [x["id"] for x in created["lines"]]
    r = client.post(f"/v1/requests/{rid}/lines/{l3}/cancel", headers=req.headers)
    assert r.status_code == 200 and r.json()["lines"][2]["status"] == "cancelled" and r.json()["status"] == "open"
    assert client.post(f"/v1/requests/{rid}/lines/{l3}/cancel", headers=req.headers).status_code == 409
    gone = client.patch(
        f"/v1/requests/{rid}/lines/{l3}", json={"quantity": 3}, headers=req.headers | {"If-Match": '"v2"'}
    )
    assert gone.status_code == 409

    set_line(engine, l1, quantity_reserved=100)  # fully allocated
    assert client.post(f"/v1/requests/{rid}/lines/{l1}/cancel", headers=req.headers).status_code == 409
    stale = client.post(f"/v1/requests/{rid}/cancel", headers=req.headers | {"If-Match": '"v1"'})
    assert stale.status_code == 412
    r = client.post(f"/v1/requests/{rid}/cancel", headers=req.headers)
    assert r.status_code == 200
    statuses = [x["status"] for x in r.json()["lines"]]
    assert statuses == ["allocated", "cancelled", "cancelled"] and r.json()["status"] == "allocated"
    assert client.post(f"/v1/requests/{rid}/cancel", headers=req.headers).status_code == 409

    other = post(client, req, body(world["site"], line(world["item"]))).json()
    r = client.post(f"/v1/requests/{other['id']}/cancel", headers=req.headers)
    assert r.json()["status"] == "cancelled" and r.json()["lines"][0]["status"] == "cancelled"
    closed = client.patch(
        f"/v1/requests/{other['id']}", json={"justification": "?"}, headers=req.headers | {"If-Match": '"v2"'}
    )
    assert closed.status_code == 409


def test_audit_events_for_every_write(client: TestClient, factory: Factory, world: dict[str, Any]) -> None:
    req = world["requester"]
    created = post(client, req, body(world["site"], line(world["item"]), line(world["item2"]))).json()
    rid, (l1, l2) = created["id"], [x["id"] for x in created["lines"]]
    client.patch(f"/v1/requests/{rid}", json={"justification": "more"}, headers=req.headers | {"If-Match": '"v1"'})
    client.patch(f"/v1/requests/{rid}/lines/{l1}", json={"quantity": 55}, headers=req.headers | {"If-Match": '"v2"'})
    client.post(f"/v1/requests/{rid}/lines/{l2}/cancel", headers=req.headers)
    client.post(f"/v1/requests/{rid}/cancel", headers=req.headers)
    admin = factory.actor("admin")
    events = client.get("/v1/audit-events", params={"actor_key_id": req.key_id}, headers=admin.headers).json()["items"]
    assert [e["action"] for e in events] == [
        "request.create",
        "request.update",
        "request_line.update",
        "request_line.cancel",
        "request.cancel",
    ]
    create, update, line_update, _, cancel = events
    assert create["before"] is None and len(create["after"]["lines"]) == 2
    assert (update["before"]["justification"], update["after"]["justification"]) == ("ICU surge", "more")
    assert (line_update["object_id"], line_update["before"]["quantity"], line_update["after"]["quantity"]) == (
        str(l1),
        100,
        55,
    )
    assert cancel["before"]["status"] == "open" and cancel["after"]["status"] == "cancelled"


def test_list_filters(client: TestClient, engine: Engine, factory: Factory) -> None:
    north = factory.actor("requester", organization_id=factory.org(region="north").id)
    south = factory.actor("requester", organization_id=factory.org(region="south").id)
    n_site, s_site = make_site(engine, north.organization_id), make_site(engine, south.organization_id)
    n_hub = make_site(engine, north.organization_id, kind="food_hub")
    mask, food = make_item(engine), make_item(engine)
    a = post(client, north, body(n_site, line(mask, priority="critical"))).json()["id"]
    mid = datetime.now(UTC).isoformat()
    b = post(client, north, body(n_hub, line(food, priority="routine"), line(mask, priority="high"))).json()["id"]
    c = post(client, south, body(s_site, line(mask, priority="routine"))).json()["id"]
    client.post(f"/v1/requests/{c}/cancel", headers=south.headers)
    admin = factory.actor("admin")

    def ids(**params: Any) -> list[int]:
        r = client.get("/v1/requests", params=params, headers=admin.headers)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids() == [a, b, c]
    assert ids(organization_id=south.organization_id) == [c]
    assert ids(site_id=n_hub) == [b]
    assert ids(item_id=food) == [b]
    assert ids(priority="critical") == [a]
    assert ids(priority="routine") == [b, c]
    assert ids(item_id=food, priority="high") == []  # one line must match both
    assert ids(status="cancelled") == [c]
    assert ids(region="north") == [a, b]
    assert ids(created_after=mid) == [b, c]
    assert (
        client.get("/v1/requests", params={"created_after": "2026-01-01T00:00:00"}, headers=admin.headers).status_code
        == 422
    )
    assert client.get("/v1/requests", params={"status": "lost"}, headers=admin.headers).status_code == 422
    page = client.get("/v1/requests", params={"limit": 2}, headers=admin.headers).json()
    rest = client.get("/v1/requests", params={"limit": 2, "cursor": page["next_cursor"]}, headers=admin.headers).json()
    assert [x["id"] for x in page["items"] + rest["items"]] == [a, b, c] and rest["next_cursor"] is None


def test_open_lines_for_the_allocation_snapshot(client: TestClient, engine: Engine, factory: Factory) -> None:
    north = factory.actor("requester", organization_id=factory.org(region="north").id)
    south = factory.actor("requester", organization_id=factory.org(region="south").id)
    mask, gown = make_item(engine), make_item(engine)
    n = post(
        client, north, body(make_site(engine, north.organization_id), line(mask, 10), line(gown, 20), line(mask, 30))
    ).json()
    s = post(client, south, body(make_site(engine, south.organization_id), line(mask, 40))).json()
    n1, n2, n3 = [x["id"] for x in n["lines"]]
    set_line(engine, n1, quantity_reserved=4)  # partly allocated: 6 remaining
    set_line(engine, n2, quantity_delivered=20)  # fulfilled: nothing remaining
    client.post(f"/v1/requests/{n['id']}/lines/{n3}/cancel", headers=north.headers)
    with Session(engine) as session:
        found = service.open_lines(session)
        assert [(o.line.id, o.remaining, o.organization.region) for o in found] == [
            (n1, 6, "north"),
            (s["lines"][0]["id"], 40, "south"),
        ]
        assert [o.line.id for o in service.open_lines(session, regions=["south"])] == [s["lines"][0]["id"]]
        assert service.open_lines(session, item_ids=[gown]) == []
        assert found[0].site.id == n["site_id"]
        # The snapshot's column-only form: the same lines, in the same order, with the same values.
        rows = service.open_line_rows(session)
        assert [
            (r.line_id, r.item_id, r.priority, r.needed_by, r.remaining, r.organization_id, r.equity_weight)
            for r in rows
        ] == [
            (
                o.line.id,
                o.line.item_id,
                o.line.priority,
                o.line.needed_by,
                o.remaining,
                o.organization.id,
                o.organization.equity_weight,
            )
            for o in found
        ]
        assert [(r.site_id, r.lat, r.lon) for r in rows] == [(o.site.id, o.site.lat, o.site.lon) for o in found]
        assert [r.line_id for r in service.open_line_rows(session, regions=["south"])] == [s["lines"][0]["id"]]
        assert service.open_line_rows(session, item_ids=[gown]) == []


def test_recompute_statuses_follows_quantities(client: TestClient, engine: Engine, world: dict[str, Any]) -> None:
    created = post(client, world["requester"], body(world["site"], line(world["item"], 10))).json()
    with transaction(engine) as session:
        request = session.get(SupplyRequest, created["id"])
        assert request is not None
        lines = service.lines_of(session, request)
        lines[0].quantity_in_transit, lines[0].quantity_delivered = 4, 6
        assert service.recompute_statuses(session, request=request, lines=lines) is True
    got = client.get(f"/v1/requests/{created['id']}", headers=world["requester"].headers)
    assert got.json()["status"] == "partially_fulfilled" and got.headers["ETag"] == '"v2"'


@pytest.mark.parametrize(
    ("quantities", "cancelled", "expected"),
    [
        ((10, 0, 0, 0), False, "open"),
        ((10, 4, 0, 0), False, "partially_allocated"),
        ((10, 4, 6, 0), False, "allocated"),
        ((10, 10, 0, 0), False, "allocated"),
        ((10, 0, 4, 6), False, "partially_fulfilled"),
        ((10, 0, 0, 3), False, "partially_fulfilled"),
        ((10, 0, 0, 10), False, "fulfilled"),
        ((10, 4, 0, 0), True, "cancelled"),
    ],
)
def test_line_status(quantities: tuple[int, int, int, int], cancelled: bool, expected: str) -> None:
    assert line_status(*quantities, cancelled) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["open"], "open"),
        (["open", "cancelled"], "open"),
        (["cancelled", "cancelled"], "cancelled"),
        ([], "cancelled"),
        (["allocated", "allocated"], "allocated"),
        (["allocated", "cancelled"], "allocated"),
        (["open", "allocated"], "partially_allocated"),
        (["partially_allocated"], "partially_allocated"),
        (["allocated", "partially_fulfilled"], "partially_fulfilled"),
        (["open", "fulfilled"], "partially_fulfilled"),
        (["fulfilled", "fulfilled", "cancelled"], "fulfilled"),
    ],
)
def test_summarize_status(lines: list[str], expected: str) -> None:
    assert summarize_status(lines) == expected
