"""Conditional updates: PATCH, DELETE and plan approval need If-Match (428 without it, 412 when stale,
nothing changed either way); every versioned GET returns an ETag and honours If-None-Match (304)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.db import make_engine, transaction
from app.inventory import service as inventory
from app.items.models import Item
from app.main import create_app
from app.pledges.models import Pledge
from app.principal import SYSTEM
from app.requests.models import RequestLine, SupplyRequest
from app.shipments.models import Shipment
from app.sites.models import Site
from tests.factories import Factory
from tests.plan_world import build_world, line_id, snapshot, store_run, the_plan


@dataclass
class Target:
    """One conditional write: `read` is the resource's GET url, `write` the call that changes it."""

    headers: dict[str, str]
    read: str
    method: str
    write: str
    body: dict[str, Any] | None
    next_body: dict[str, Any] | None = None  # a second, different change (for the stale attempt)
    next_write: str | None = None  # …or the same kind of change to another url


def _add(engine: Engine, obj: Any) -> Any:
    with transaction(engine) as s:
        s.add(obj)
        s.flush()
        return obj


def _organization(client: TestClient, factory: Factory, engine: Engine) -> Target:
    org = factory.org()
    h = factory.actor("admin").headers
    url = f"/v1/organizations/{org.id}"
    return Target(h, url, "PATCH", url, {"region": "south"}, {"region": "east"})


def _site(client: TestClient, factory: Factory, engine: Engine) -> Target:
    site = _add(engine, Site(organization_id=factory.org().id, name="Dock", kind="hospital_dock", lat=1, lon=2))
    url = f"/v1/sites/{site.id}"
    return Target(factory.actor("logistics").headers, url, "PATCH", url, {"name": "Dock A"}, {"name": "Dock B"})


def _item(client: TestClient, factory: Factory, engine: Engine) -> Target:
    item = _add(engine, Item(sku="COND-1", name="Gown", category="ppe"))
    url = f"/v1/items/{item.id}"
    return Target(factory.actor("logistics").headers, url, "PATCH", url, {"name": "Gown L"}, {"name": "Gown XL"})


def _request(factory: Factory, engine: Engine) -> tuple[Any, int, int]:
    requester = factory.actor("requester")
    site = _add(engine, Site(organization_id=requester.organization_id, name="D", kind="hospital_dock", lat=1, lon=2))
    item = _add(engine, Item(sku="COND-2", name="Mask", category="ppe"))
    request = _add(engine, SupplyRequest(organization_id=requester.organization_id, site_id=site.id))
    line = _add(engine, RequestLine(request_id=request.id, item_id=item.id, quantity=50, priority="high"))
    return requester, request.id, line.id


def _request_header(client: TestClient, factory: Factory, engine: Engine) -> Target:
    requester, rid, _ = _request(factory, engine)
    url = f"/v1/requests/{rid}"
    return Target(requester.headers, url, "PATCH", url, {"justification": "ICU"}, {"justification": "ER"})


def _request_line(client: TestClient, factory: Factory, engine: Engine) -> Target:
    requester, rid, lid = _request(factory, engine)
    write = f"/v1/requests/{rid}/lines/{lid}"
    return Target(requester.headers, f"/v1/requests/{rid}", "PATCH", write, {"quantity": 40}, {"quantity": 30})


def _plan_setup(factory: Factory, engine: Engine) -> tuple[dict[str, str], str, Any]:
    """A proposed plan (tests/test_plans.py's small coalition); returns headers, the plan's url, the world."""
    w = build_world(engine, factory)
    run_id = store_run(engine, snapshot(w), the_plan(w))
    return factory.actor("logistics").headers, f"/v1/allocation-runs/{run_id}/plan", w


def _plan_line_edit(client: TestClient, factory: Factory, engine: Engine) -> Target:
    h, read, w = _plan_setup(factory, engine)
    line = line_id(client.get(read, headers=h).json(), f"lot-{w.lot_n}", w.a1)
    return Target(h, read, "PATCH", f"{read}/lines/{line}", {"quantity": 70}, {"quantity": 60})


def _plan_line_removal(client: TestClient, factory: Factory, engine: Engine) -> Target:
    h, read, w = _plan_setup(factory, engine)
    plan = client.get(read, headers=h).json()
    # The stale attempt removes a second line with the ETag from before the first removal.
    first, second = line_id(plan, f"pledge-{w.pledge}", w.a2), line_id(plan, f"lot-{w.lot_k}", w.b1)
    return Target(h, read, "DELETE", f"{read}/lines/{first}", None, None, next_write=f"{read}/lines/{second}")


def _plan_approval(client: TestClient, factory: Factory, engine: Engine) -> Target:
    h, read, _ = _plan_setup(factory, engine)
    return Target(h, read, "POST", f"{read}/approve", None)


TARGETS: dict[str, Callable[[TestClient, Factory, Engine], Target]] = {
    "organization": _organization,
    "site": _site,
    "item": _item,
    "request": _request_header,
    "request line": _request_line,
    "plan line edit": _plan_line_edit,
    "plan line removal": _plan_line_removal,
    "plan approval": _plan_approval,
}


def _send(
    client: TestClient, t: Target, body: dict[str, Any] | None, if_match: str | None, write: str | None = None
) -> Any:
    headers = t.headers | ({"If-Match": if_match} if if_match is not None else {})
    return client.request(t.method, write or t.write, json=body, headers=headers)


def _shipments(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(Shipment)).one()


@pytest.mark.parametrize("kind", list(TARGETS))
def test_if_match_is_required_and_a_stale_one_changes_nothing(
    client: TestClient, engine: Engine, factory: Factory, kind: str
) -> None:
    t = TARGETS[kind](client, factory, engine)
    before = client.get(t.read, headers=t.headers)
    etag0 = before.headers["ETag"]

    missing = _send(client, t, t.body, None)
    assert missing.status_code == 428, missing.text
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["status"] == 428 and missing.json()["type"].endswith("/precondition-required")
    unchanged = client.get(t.read, headers=t.headers)
    assert unchanged.headers["ETag"] == etag0 and unchanged.json() == before.json()
    assert _shipments(engine) == 0

    done = _send(client, t, t.body, etag0)
    assert done.status_code == 200, done.text
    etag1 = done.headers["ETag"]
    assert etag1 != etag0
    after = client.get(t.read, headers=t.headers)
    assert after.headers["ETag"] == etag1

    if t.next_body is not None or t.next_write is not None or t.method == "POST":
        stale = _send(client, t, t.next_body, etag0, t.next_write)
        # A second approval is refused whatever the ETag; for edits the stale ETag is what refuses it.
        assert stale.status_code in ((412,) if t.method != "POST" else (409, 412)), stale.text
        if t.method != "POST":
            assert stale.json()["type"].endswith("/precondition-failed")
        still = client.get(t.read, headers=t.headers)
        assert still.headers["ETag"] == etag1 and still.json() == after.json()

    # Conditional GET: the current ETag → 304 without a body; the old one → the new representation.
    assert client.get(t.read, headers=t.headers | {"If-None-Match": etag1}).status_code == 304
    assert client.get(t.read, headers=t.headers | {"If-None-Match": etag0}).status_code == 200


def test_a_stale_approval_is_412_and_reserves_nothing(client: TestClient, engine: Engine, factory: Factory) -> None:
    h, read, w = _plan_setup(factory, engine)
    etag0 = client.get(read, headers=h).headers["ETag"]
    line = line_id(client.get(read, headers=h).json(), f"lot-{w.lot_n}", w.a1)
    assert (
        client.patch(f"{read}/lines/{line}", json={"quantity": 70}, headers=h | {"If-Match": etag0}).status_code == 200
    )
    stale = client.post(f"{read}/approve", headers=h | {"If-Match": etag0})
    assert stale.status_code == 412
    assert client.get(read, headers=h).json()["state"] == "proposed" and _shipments(engine) == 0


def test_if_match_star_means_any_current_version(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    r = client.patch(
        f"/v1/organizations/{org.id}",
        json={"region": "west"},
        headers=factory.actor("admin").headers | {"If-Match": "*"},
    )
    assert r.status_code == 200 and r.json()["region"] == "west"


def test_a_foreign_id_is_404_before_428(client: TestClient, factory: Factory, engine: Engine) -> None:
    _, rid, _ = _request(factory, engine)
    stranger = factory.actor("requester")
    assert client.patch(f"/v1/requests/{rid}", json={"justification": "x"}, headers=stranger.headers).status_code == 404


# ---------------------------------------------------------------- versioned records changed by actions


def _pledge(factory: Factory, engine: Engine) -> tuple[Any, int]:
    donor = factory.actor("donor")
    site = _add(engine, Site(organization_id=donor.organization_id, name="Yard", kind="donor_site", lat=1, lon=2))
    item = _add(engine, Item(sku="COND-3", name="Gloves", category="ppe"))
    pledge = _add(engine, Pledge(organization_id=donor.organization_id, site_id=site.id, item_id=item.id, quantity=9))
    return donor, pledge.id


def test_pledge_actions_honour_if_match_and_get_honours_if_none_match(
    client: TestClient, engine: Engine, factory: Factory
) -> None:
    donor, pid = _pledge(factory, engine)
    logistics = factory.actor("logistics").headers
    url = f"/v1/pledges/{pid}"
    first = client.get(url, headers=logistics)
    etag0 = first.headers["ETag"]
    assert client.get(url, headers=donor.headers | {"If-None-Match": etag0}).status_code == 304
    assert client.post(f"{url}/confirm", headers=logistics | {"If-Match": '"v7"'}).status_code == 412
    assert client.get(url, headers=logistics).json() == first.json()
    confirmed = client.post(f"{url}/confirm", headers=logistics | {"If-Match": etag0})
    assert confirmed.status_code == 200 and confirmed.headers["ETag"] != etag0
    assert client.post(f"{url}/cancel", headers=logistics | {"If-Match": etag0}).status_code == 412
    assert client.get(url, headers=logistics).json()["status"] == "confirmed"
    assert client.get(url, headers=logistics | {"If-None-Match": confirmed.headers["ETag"]}).status_code == 304


def test_lot_adjustments_honour_if_match_and_get_honours_if_none_match(
    client: TestClient, engine: Engine, factory: Factory
) -> None:
    depot = _add(
        engine, Site(organization_id=factory.org(kind="depot_operator").id, name="D", kind="depot", lat=1, lon=2)
    )
    item = _add(engine, Item(sku="COND-4", name="Sanitizer", category="sanitation"))
    with transaction(engine) as s:
        lot, _ = inventory.receive(s, actor=SYSTEM, site_id=depot.id, item_id=item.id, quantity=20)
    h = factory.actor("logistics").headers
    url = f"/v1/inventory/lots/{lot.id}"
    etag0 = client.get(url, headers=h).headers["ETag"]
    adjust = {"kind": "adjust", "lot_id": lot.id, "delta": -5, "reason": "recount"}
    assert client.post("/v1/inventory/movements", json=adjust, headers=h | {"If-Match": '"v9"'}).status_code == 412
    assert client.get(url, headers=h).json()["on_hand"] == 20
    assert client.get(url, headers=h | {"If-None-Match": etag0}).status_code == 304
    ok = client.post("/v1/inventory/movements", json=adjust, headers=h | {"If-Match": etag0})
    assert ok.status_code == 201
    assert client.get(url, headers=h | {"If-None-Match": etag0}).status_code == 200
    assert client.get(url, headers=h | {"If-None-Match": ok.headers["X-Lot-ETag"]}).status_code == 304


def test_shipment_writes_honour_if_match_and_get_honours_if_none_match(
    client: TestClient, engine: Engine, factory: Factory
) -> None:
    h, read, _ = _plan_setup(factory, engine)
    approved = client.post(f"{read}/approve", headers=h | {"If-Match": client.get(read, headers=h).headers["ETag"]})
    assert approved.status_code == 200, approved.text
    shipment = client.get("/v1/shipments", headers=h).json()["items"][0]
    url = f"/v1/shipments/{shipment['id']}"
    first = client.get(url, headers=h)
    etag0 = first.headers["ETag"]
    assert client.get(url, headers=h | {"If-None-Match": etag0}).status_code == 304
    driver = factory.actor("driver")
    assign = client.post(f"{url}/assign", json={"driver_key_id": driver.key_id}, headers=h | {"If-Match": etag0})
    assert assign.status_code == 200 and assign.headers["ETag"] != etag0
    stale = client.post(f"{url}/events", json={"status": "dispatched"}, headers=h | {"If-Match": etag0})
    assert stale.status_code == 412
    assert client.get(url, headers=h).json()["status"] == "planned"
    assert client.get(url, headers=h | {"If-None-Match": assign.headers["ETag"]}).status_code == 304


# ---------------------------------------------------------------- the rule covers every route


def test_every_patch_delete_and_approval_documents_if_match_as_required() -> None:
    paths = create_app(engine=make_engine("sqlite://")).openapi()["paths"]
    checked = 0
    for path, operations in paths.items():
        for method, op in operations.items():
            if path.startswith("/v1/") and (method in {"patch", "delete"} or path.endswith("/plan/approve")):
                params = {p["name"]: p for p in op.get("parameters", [])}
                assert params.get("If-Match", {}).get("required") is True, f"{method.upper()} {path}"
                assert {"412", "428"} <= op["responses"].keys()
                checked += 1
    assert checked >= 7


def test_a_run_honours_if_none_match(client: TestClient, engine: Engine, factory: Factory) -> None:
    h, read, _ = _plan_setup(factory, engine)
    run_url = read.removesuffix("/plan")
    first = client.get(run_url, headers=h)
    assert first.status_code == 200 and first.headers["ETag"]
    again = client.get(run_url, headers=h | {"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
