"""Organisation-bound keys never see or touch another organisation's objects: 404 on ids, absent from lists."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.items.models import Item
from app.sites.models import Site
from tests.conftest import Actor
from tests.factories import Factory


def _site(engine: Engine, org_id: int | None, kind: str) -> int:
    with Session(engine) as s:
        site = s.exec(select(Site).where(Site.organization_id == org_id, Site.kind == kind)).first()
        assert site is not None and site.id is not None
        return site.id


def _item(engine: Engine) -> int:
    with Session(engine) as s:
        item_id = s.exec(select(Item.id).where(Item.sku == "N95")).one()
        assert item_id is not None
        return item_id


def _list_ids(client: TestClient, actor: Actor, path: str) -> set[int]:
    ids: set[int] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = client.get(path, params=params, headers=actor.headers).json()
        ids |= {row["id"] for row in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_requesters_are_isolated(client: TestClient, engine: Engine, demo: dict[str, Actor]) -> None:
    hospital, food_hub = demo["requester"], demo["requester-2"]
    item = _item(engine)
    mine = client.post(
        "/v1/requests",
        json={
            "site_id": _site(engine, hospital.organization_id, "hospital_dock"),
            "lines": [{"item_id": item, "quantity": 5}],
        },
        headers=hospital.headers,
    )
    assert mine.status_code == 201, mine.text
    report = client.post("/v1/usage-reports", json={"item_id": item, "on_hand": 40}, headers=hospital.headers)
    assert report.status_code == 201, report.text
    foreign = {
        f"/v1/requests/{mine.json()['id']}": "/v1/requests",
        f"/v1/usage-reports/{report.json()['id']}": "/v1/usage-reports",
        f"/v1/organizations/{hospital.organization_id}": "/v1/organizations",
        f"/v1/sites/{_site(engine, hospital.organization_id, 'hospital_dock')}": "/v1/sites",
        f"/v1/api-keys/{hospital.key_id}": "/v1/api-keys",
    }
    for url, listing in foreign.items():
        assert client.get(url, headers=food_hub.headers).status_code == 404, url
        assert client.get(url, headers=hospital.headers).status_code == 200, url
        assert int(url.rsplit("/", 1)[1]) not in _list_ids(client, food_hub, listing), listing
    # writes on foreign ids are 404 too, and change nothing
    rid = mine.json()["id"]
    assert client.post(f"/v1/requests/{rid}/cancel", headers=food_hub.headers).status_code == 404
    assert client.patch(f"/v1/requests/{rid}", json={"justification": "x"}, headers=food_hub.headers).status_code == 404
    assert client.get(f"/v1/requests/{rid}", headers=hospital.headers).json()["status"] == "open"
    # every row a requester lists belongs to its organisation
    for listing in ("/v1/requests", "/v1/usage-reports", "/v1/sites", "/v1/api-keys"):
        for row in client.get(listing, params={"limit": 500}, headers=food_hub.headers).json()["items"]:
            assert row["organization_id"] == food_hub.organization_id, listing


def test_donors_are_isolated(client: TestClient, engine: Engine, demo: dict[str, Actor], factory: Factory) -> None:
    donor = demo["donor"]
    other_org = factory.org(kind="donor")
    other = factory.actor("donor", organization_id=other_org.id)
    pledge = client.post(
        "/v1/pledges",
        json={"item_id": _item(engine), "site_id": _site(engine, donor.organization_id, "donor_site"), "quantity": 100},
        headers=donor.headers,
    )
    assert pledge.status_code == 201, pledge.text
    pid = pledge.json()["id"]
    assert client.get(f"/v1/pledges/{pid}", headers=other.headers).status_code == 404
    assert client.post(f"/v1/pledges/{pid}/cancel", headers=other.headers).status_code == 404
    assert pid not in _list_ids(client, other, "/v1/pledges")
    assert client.get(f"/v1/pledges/{pid}", headers=donor.headers).json()["status"] == "pledged"
