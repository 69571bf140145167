"""Pledges: the donor's lifecycle, logistics' transitions, donor isolation, receipt through the ledger,
and the commit/uncommit bookkeeping plan approval will use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.db import transaction
from app.errors import DomainError
from app.items import service as items
from app.items.models import ItemCreate
from app.pledges import service as pledges
from app.principal import SYSTEM
from app.sites import service as sites
from app.sites.models import SiteCreate
from tests.conftest import Actor
from tests.factories import Factory

PLEDGES = "/v1/pledges"


def _site(engine: Engine, organization_id: int, kind: str) -> int:
    data = SiteCreate(organization_id=organization_id, name=f"{kind} site", kind=kind, lat=40.7, lon=-74.0)  # type: ignore[arg-type]
    with transaction(engine) as s:
        return sites.create_site(s, actor=SYSTEM, data=data).id  # type: ignore[return-value]


def _item(engine: Engine, sku: str) -> int:
    with transaction(engine) as s:
        return items.create_item(s, actor=SYSTEM, data=ItemCreate(sku=sku, name=sku, category="ppe")).id  # type: ignore[arg-type,return-value]


def _donor(factory: Factory, engine: Engine, region: str = "north") -> tuple[Actor, int]:
    """A donor key and a donor site of its own organisation."""
    donor = factory.actor("donor", organization_id=factory.org(kind="donor", region=region).id)
    return donor, _site(engine, donor.organization_id, "donor_site")  # type: ignore[arg-type]


def _pledge(client: TestClient, donor: Actor, site_id: int, item_id: int, quantity: int = 100, **extra: Any) -> Any:
    body = {"item_id": item_id, "site_id": site_id, "quantity": quantity} | extra
    return client.post(PLEDGES, json=body, headers=donor.headers)


def _post(client: TestClient, actor: Actor, pledge_id: int, action: str, **kw: Any) -> Any:
    return client.post(f"{PLEDGES}/{pledge_id}/{action}", headers=actor.headers | kw.pop("headers", {}), **kw)


def _field(r: Any) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json()["errors"][0]["field"]


def _call(engine: Engine, fn: Any, **kw: Any) -> Any:
    """A service call in its own transaction; the error's status when refused."""
    try:
        with transaction(engine) as s:
            return fn(s, actor=SYSTEM, **kw)
    except DomainError as exc:
        return exc.status


def test_lifecycle_pledged_confirmed_received(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    logistics, admin = factory.actor("logistics"), factory.actor("admin")
    item = _item(engine, "N95")
    depot = _site(engine, factory.org(kind="depot_operator").id, "depot")

    r = _pledge(client, donor, donor_site, item, 120, note="from our warehouse")
    assert r.status_code == 201, r.text
    pledge = r.json()
    assert r.headers["Location"] == f"{PLEDGES}/{pledge['id']}" and r.headers["ETag"] == '"v1"'
    assert (pledge["status"], pledge["committed"], pledge["organization_id"]) == ("pledged", 0, donor.organization_id)
    available_from = datetime.fromisoformat(pledge["available_from"])
    assert abs(available_from - datetime.now(UTC)) < timedelta(minutes=1)  # defaults to now

    for reader in (donor, logistics, admin):
        got = client.get(f"{PLEDGES}/{pledge['id']}", headers=reader.headers)
        assert got.status_code == 200 and got.json() == pledge

    confirmed = _post(client, logistics, pledge["id"], "confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert confirmed.headers["ETag"] == '"v2"'

    received = _post(client, logistics, pledge["id"], "receive", json={"depot_site_id": depot})
    assert received.status_code == 200, received.text
    body = received.json()
    assert (body["status"], body["received_quantity"], body["version"]) == ("received", 120, 3)

    lot = client.get(f"/v1/inventory/lots/{body['received_lot_id']}", headers=logistics.headers).json()
    assert (lot["site_id"], lot["item_id"], lot["on_hand"], lot["reserved"]) == (depot, item, 120, 0)
    assert lot["lot_code"] == f"PLEDGE-{pledge['id']}"
    moves = client.get("/v1/inventory/movements", params={"lot_id": lot["id"]}, headers=logistics.headers).json()
    assert [(m["kind"], m["quantity"], m["reference"]) for m in moves["items"]] == [
        ("receive", 120, f"pledge:{pledge['id']}")
    ]

    events = client.get(
        "/v1/audit-events", params={"object_type": "pledges", "object_id": pledge["id"]}, headers=admin.headers
    ).json()["items"]
    assert [(e["action"], e["actor_key_id"]) for e in events] == [
        ("pledge.create", donor.key_id),
        ("pledge.confirm", logistics.key_id),
        ("pledge.receive", logistics.key_id),
    ]
    assert events[1]["before"]["status"] == "pledged" and events[1]["after"]["status"] == "confirmed"
    lot_events = client.get(
        "/v1/audit-events", params={"object_type": "inventory_lots", "object_id": lot["id"]}, headers=admin.headers
    ).json()["items"]
    assert [e["action"] for e in lot_events] == ["inventory.receive"]


def test_invalid_transitions_are_409(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    logistics = factory.actor("logistics")
    item = _item(engine, "N95")
    depot = _site(engine, factory.org(kind="depot_operator").id, "depot")
    receive = {"json": {"depot_site_id": depot}}

    p = _pledge(client, donor, donor_site, item).json()["id"]
    assert _post(client, logistics, p, "receive", **receive).status_code == 409  # not confirmed yet
    assert _post(client, logistics, p, "confirm").status_code == 200
    assert _post(client, logistics, p, "confirm").status_code == 409
    assert _post(client, donor, p, "cancel").status_code == 409  # donors withdraw only while pledged
    assert _post(client, logistics, p, "cancel").status_code == 200  # logistics may, nothing committed
    for actor, action in ((logistics, "cancel"), (logistics, "confirm"), (donor, "cancel")):
        assert _post(client, actor, p, action).status_code == 409, action
    assert _post(client, logistics, p, "receive", **receive).status_code == 409

    q = _pledge(client, donor, donor_site, item).json()["id"]
    assert _post(client, donor, q, "cancel").json()["status"] == "cancelled"

    s = _pledge(client, donor, donor_site, item).json()["id"]
    _post(client, logistics, s, "confirm")
    assert _post(client, logistics, s, "receive", **receive).status_code == 200
    for action in ("confirm", "cancel", "receive"):
        kw = receive if action == "receive" else {}
        assert _post(client, logistics, s, action, **kw).status_code == 409, action

    # rights: donors do not confirm or receive, logistics and admin do not pledge, admin only reads
    t = _pledge(client, donor, donor_site, item).json()["id"]
    assert _post(client, donor, t, "confirm").status_code == 403
    assert _post(client, donor, t, "receive", **receive).status_code == 403
    assert _post(client, factory.actor("admin"), t, "cancel").status_code == 403
    for role in ("logistics", "admin", "requester", "driver"):
        assert _pledge(client, factory.actor(role), donor_site, item).status_code == 403, role
    for role in ("requester", "driver"):
        assert client.get(PLEDGES, headers=factory.actor(role).headers).status_code == 403, role


def test_if_match_guards_changes(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    logistics = factory.actor("logistics")
    p = _pledge(client, donor, donor_site, _item(engine, "N95")).json()["id"]
    assert _post(client, logistics, p, "confirm", headers={"If-Match": '"v7"'}).status_code == 412
    assert _post(client, logistics, p, "confirm", headers={"If-Match": '"v1"'}).status_code == 200
    assert _post(client, logistics, p, "cancel", headers={"If-Match": '"v1"'}).status_code == 412
    assert client.get(f"{PLEDGES}/{p}", headers=logistics.headers).json()["status"] == "confirmed"


def test_donors_see_only_their_own_pledges(client: TestClient, factory: Factory, engine: Engine) -> None:
    mine, my_site = _donor(factory, engine, "north")
    theirs, their_site = _donor(factory, engine, "south")
    logistics = factory.actor("logistics")
    item = _item(engine, "N95")
    own = _pledge(client, mine, my_site, item).json()["id"]
    foreign = _pledge(client, theirs, their_site, item).json()["id"]

    assert client.get(f"{PLEDGES}/{foreign}", headers=mine.headers).status_code == 404
    assert _post(client, mine, foreign, "cancel").status_code == 404
    assert client.get(f"{PLEDGES}/{foreign}", headers=theirs.headers).json()["status"] == "pledged"
    assert [p["id"] for p in client.get(PLEDGES, headers=mine.headers).json()["items"]] == [own]
    asked = client.get(PLEDGES, params={"organization_id": theirs.organization_id}, headers=mine.headers)
    assert asked.json()["items"] == []
    # a donor cannot pledge from another donor's site either; the site simply does not exist for it
    stolen = _pledge(client, mine, their_site, item)
    assert stolen.status_code == 422 and _field(stolen) == "site_id"
    assert [p["id"] for p in client.get(PLEDGES, headers=logistics.headers).json()["items"]] == [own, foreign]


def test_bad_pledges_name_the_field_and_write_nothing(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    item = _item(engine, "N95")
    depot_of_mine = _site(engine, donor.organization_id, "depot")  # type: ignore[arg-type]
    future = datetime.now(UTC) + timedelta(days=10)
    cases = [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -5}, "quantity"),
        ({"item_id": 987654}, "item_id"),
        ({"site_id": 987654}, "site_id"),
        ({"site_id": depot_of_mine}, "site_id"),
        ({"available_from": "2026-12-01T00:00:00"}, "available_from"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"available_from": future.isoformat(), "expires_at": (future - timedelta(days=1)).isoformat()}, "expires_at"),
        ({"organization_id": 1}, "organization_id"),
    ]
    for override, field in cases:
        body = {"item_id": item, "site_id": donor_site, "quantity": 10} | override
        r = client.post(PLEDGES, json=body, headers=donor.headers)
        assert r.status_code == 422 and _field(r) == field, (override, r.text)
    assert client.get(PLEDGES, headers=donor.headers).json()["items"] == []


def test_receive_rules(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    logistics = factory.actor("logistics")
    item = _item(engine, "N95")
    depot = _site(engine, factory.org(kind="depot_operator").id, "depot")
    hospital_dock = _site(engine, factory.org(kind="hospital").id, "hospital_dock")
    p = _pledge(client, donor, donor_site, item, 50).json()["id"]
    _post(client, logistics, p, "confirm")
    for body, field in (
        ({"depot_site_id": hospital_dock}, "depot_site_id"),
        ({"depot_site_id": 987654}, "depot_site_id"),
        ({"depot_site_id": depot, "quantity": 51}, "quantity"),
        ({"depot_site_id": depot, "quantity": 0}, "quantity"),
        ({"depot_site_id": depot, "expires_at": "2027-01-01T00:00:00"}, "expires_at"),
    ):
        r = _post(client, logistics, p, "receive", json=body)
        assert r.status_code == 422 and _field(r) == field, (body, r.text)
    assert client.get(f"{PLEDGES}/{p}", headers=logistics.headers).json()["status"] == "confirmed"
    assert client.get("/v1/inventory/movements", headers=logistics.headers).json()["items"] == []

    short = _post(client, logistics, p, "receive", json={"depot_site_id": depot, "quantity": 45, "lot_code": "D-1"})
    assert short.status_code == 200 and short.json()["received_quantity"] == 45
    lot = client.get(f"/v1/inventory/lots/{short.json()['received_lot_id']}", headers=logistics.headers).json()
    assert (lot["on_hand"], lot["lot_code"]) == (45, "D-1")


def test_commit_uncommit_and_confirmed_supply(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    logistics = factory.actor("logistics")
    n95, gown = _item(engine, "N95"), _item(engine, "GOWN")
    depot = _site(engine, factory.org(kind="depot_operator").id, "depot")
    p = _pledge(client, donor, donor_site, n95, 100).json()["id"]
    other = _pledge(client, donor, donor_site, gown, 10).json()["id"]
    expiring = _pledge(
        client, donor, donor_site, n95, 10, expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()
    )
    now = datetime.now(UTC)

    def supply(at: datetime = now, **kw: Any) -> list[int]:
        with transaction(engine) as s:
            return [x.id for x in pledges.confirmed_supply(s, now=at, **kw)]  # type: ignore[misc]

    assert _call(engine, pledges.commit, pledge_id=p, quantity=10, reference="plan:1") == 409  # not confirmed
    assert supply() == []
    for pid in (p, other, expiring.json()["id"]):
        _post(client, logistics, pid, "confirm")
    assert supply() == [p, other, expiring.json()["id"]]
    assert supply(item_ids=[gown]) == [other]
    assert supply(at=now + timedelta(days=2)) == [p, other]  # an expired pledge is no supply

    assert _call(engine, pledges.commit, pledge_id=p, quantity=30, reference="plan:1").committed == 30
    assert _call(engine, pledges.commit, pledge_id=p, quantity=71, reference="plan:2") == 409
    assert _call(engine, pledges.commit, pledge_id=p, quantity=0, reference="plan:2") == 422
    assert _call(engine, pledges.commit, pledge_id=p, quantity=70, reference="plan:2").committed == 100
    assert p not in supply()  # fully committed
    assert _post(client, logistics, p, "receive", json={"depot_site_id": depot}).status_code == 409
    assert _post(client, logistics, p, "cancel").status_code == 409  # committed units ship from the donor

    assert _call(engine, pledges.uncommit, pledge_id=p, quantity=101, reference="plan:2") == 409
    assert _call(engine, pledges.uncommit, pledge_id=p, quantity=80, reference="plan:2").committed == 20
    assert p in supply()
    received = _post(client, logistics, p, "receive", json={"depot_site_id": depot})
    assert received.json()["received_quantity"] == 80  # default: quantity − committed
    lot = client.get(f"/v1/inventory/lots/{received.json()['received_lot_id']}", headers=logistics.headers).json()
    assert lot["on_hand"] == 80
    assert p not in supply()
    # the committed 20 still ship from the donor site; giving them back leaves the pledge received
    after = _call(engine, pledges.uncommit, pledge_id=p, quantity=20, reference="plan:1")
    assert (after.committed, after.status) == (0, "received")
    assert _call(engine, pledges.commit, pledge_id=987654, quantity=1, reference="plan:3") == 404

    admin = factory.actor("admin")
    events = client.get(
        "/v1/audit-events", params={"object_type": "pledges", "object_id": p}, headers=admin.headers
    ).json()["items"]
    commits = [(e["action"], e["after"]["committed"]) for e in events if "commit" in e["action"]]
    assert commits == [("pledge.commit", 30), ("pledge.commit", 100), ("pledge.uncommit", 20), ("pledge.uncommit", 0)]


def test_list_filters(client: TestClient, factory: Factory, engine: Engine) -> None:
    north, north_site = _donor(factory, engine, "north")
    south, south_site = _donor(factory, engine, "south")
    logistics = factory.actor("logistics")
    n95, gown = _item(engine, "N95"), _item(engine, "GOWN")
    a = _pledge(client, north, north_site, n95).json()["id"]
    b = _pledge(client, north, north_site, gown).json()["id"]
    c = _pledge(client, south, south_site, n95).json()["id"]
    _post(client, logistics, b, "confirm")

    def ids(actor: Actor = logistics, **params: Any) -> list[int]:
        r = client.get(PLEDGES, params=params, headers=actor.headers)
        assert r.status_code == 200, r.text
        return [p["id"] for p in r.json()["items"]]

    assert ids() == [a, b, c]
    assert ids(organization_id=south.organization_id) == [c]
    assert ids(item_id=n95) == [a, c]
    assert ids(site_id=north_site) == [a, b]
    assert ids(status="confirmed") == [b]
    assert ids(region="south") == [c]
    assert ids(north, status="pledged") == [a]
    assert _field(client.get(PLEDGES, params={"status": "lost"}, headers=logistics.headers)) == "status"
    page = client.get(PLEDGES, params={"limit": 2}, headers=logistics.headers).json()
    assert [p["id"] for p in page["items"]] == [a, b]
    rest = client.get(PLEDGES, params={"limit": 2, "cursor": page["next_cursor"]}, headers=logistics.headers).json()
    assert [p["id"] for p in rest["items"]] == [c] and rest["next_cursor"] is None


def test_a_donor_whose_organization_left_cannot_pledge(client: TestClient, factory: Factory, engine: Engine) -> None:
    donor, donor_site = _donor(factory, engine)
    admin = factory.actor("admin")
    item = _item(engine, "N95")
    assert client.post(f"/v1/organizations/{donor.organization_id}/leave", headers=admin.headers).status_code == 200
    r = _pledge(client, donor, donor_site, item)
    assert r.status_code == 409 and "left the coalition" in r.json()["detail"]
    assert client.get(PLEDGES, headers=admin.headers).json()["items"] == []


@pytest.mark.parametrize("role", ["requester", "driver"])
def test_roles_without_pledge_rights_get_403(client: TestClient, factory: Factory, engine: Engine, role: str) -> None:
    donor, donor_site = _donor(factory, engine)
    p = _pledge(client, donor, donor_site, _item(engine, "N95")).json()["id"]
    outsider = factory.actor(role)
    assert client.get(f"{PLEDGES}/{p}", headers=outsider.headers).status_code == 403
    assert _post(client, outsider, p, "cancel").status_code == 403
