from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Actor
from tests.factories import Factory


def _site_body(organization_id: int, **overrides: Any) -> dict[str, Any]:
    body = {"organization_id": organization_id, "name": "North depot", "kind": "depot", "lat": 40.71, "lon": -74.0}
    return body | overrides


def _create(client: TestClient, actor: Actor, organization_id: int, **overrides: Any) -> dict[str, Any]:
    r = client.post("/v1/sites", json=_site_body(organization_id, **overrides), headers=actor.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _field(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()["errors"][0]["field"]


def _audit(client: TestClient, admin: Actor, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/audit-events", params={"object_type": "sites", **params}, headers=admin.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_logistics_creates_reads_and_lists_sites(client: TestClient, factory: Factory) -> None:
    logistics = factory.actor("logistics")
    owner = factory.org(kind="depot_operator")
    r = client.post("/v1/sites", json=_site_body(owner.id, address="1 Dock Rd"), headers=logistics.headers)
    assert r.status_code == 201, r.text
    site = r.json()
    assert r.headers["Location"] == f"/v1/sites/{site['id']}"
    assert r.headers["ETag"] == '"v1"'
    assert site | {"id": 0, "created_at": "", "updated_at": ""} == {
        "id": 0,
        "organization_id": owner.id,
        "name": "North depot",
        "kind": "depot",
        "lat": 40.71,
        "lon": -74.0,
        "address": "1 Dock Rd",
        "active": True,
        "version": 1,
        "created_at": "",
        "updated_at": "",
    }
    got = client.get(f"/v1/sites/{site['id']}", headers=logistics.headers)
    assert got.status_code == 200 and got.json() == site
    listed = client.get("/v1/sites", headers=logistics.headers).json()
    assert listed == {"items": [site], "next_cursor": None}


def test_list_filters_by_organization_kind_region_and_active(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    north, south = factory.org(kind="depot_operator", region="north"), factory.org(kind="hospital", region="south")
    depot = _create(client, admin, north.id, name="N depot")
    dock = _create(client, admin, south.id, name="S dock", kind="hospital_dock")
    closed = _create(client, admin, south.id, name="S old depot")
    assert client.post(f"/v1/sites/{closed['id']}/deactivate", headers=admin.headers).status_code == 200

    def names(**params: Any) -> list[str]:
        r = client.get("/v1/sites", params=params, headers=admin.headers)
        assert r.status_code == 200, r.text
        return [s["name"] for s in r.json()["items"]]

    assert names() == [depot["name"], dock["name"], closed["name"]]
    assert names(organization_id=south.id) == ["S dock", "S old depot"]
    assert names(kind="depot") == ["N depot", "S old depot"]
    assert names(region="south") == ["S dock", "S old depot"]
    assert names(region="north", kind="hospital_dock") == []
    assert names(active="false") == ["S old depot"]
    assert names(active="true", region="south") == ["S dock"]
    assert client.get("/v1/sites", params={"kind": "castle"}, headers=admin.headers).status_code == 422


def test_bad_coordinates_and_kind_are_422_naming_the_field_and_write_nothing(
    client: TestClient, factory: Factory
) -> None:
    admin = factory.actor("admin")
    org = factory.org()
    cases = [({"lat": 123}, "lat"), ({"lat": -90.5}, "lat"), ({"lon": -200}, "lon"), ({"lon": 180.01}, "lon")]
    cases += [({"kind": "warehouse"}, "kind"), ({"lat": "north"}, "lat"), ({"name": ""}, "name")]
    cases += [({"colour": "red"}, "colour")]
    for overrides, field in cases:
        r = client.post("/v1/sites", json=_site_body(org.id, **overrides), headers=admin.headers)
        assert r.status_code == 422, (overrides, r.text)
        assert _field(r) == field, overrides
    missing = {k: v for k, v in _site_body(org.id).items() if k != "lat"}
    r = client.post("/v1/sites", json=missing, headers=admin.headers)
    assert r.status_code == 422 and _field(r) == "lat"
    assert client.get("/v1/sites", headers=admin.headers).json()["items"] == []
    assert _audit(client, admin) == []


def test_owner_must_be_an_active_organization(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    r = client.post("/v1/sites", json=_site_body(999_999), headers=admin.headers)
    assert r.status_code == 422 and _field(r) == "organization_id"
    gone = factory.org()
    assert client.post(f"/v1/organizations/{gone.id}/leave", headers=admin.headers).status_code == 200
    r = client.post("/v1/sites", json=_site_body(gone.id), headers=admin.headers)
    assert r.status_code == 422 and _field(r) == "organization_id"
    assert client.get("/v1/sites", headers=admin.headers).json()["items"] == []


def test_patch_honours_if_match_and_bumps_version(client: TestClient, factory: Factory) -> None:
    logistics = factory.actor("logistics")
    site = _create(client, logistics, factory.org().id)
    url = f"/v1/sites/{site['id']}"
    r = client.patch(url, json={"name": "Renamed", "lat": 41.0}, headers=logistics.headers | {"If-Match": '"v1"'})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed" and r.json()["lat"] == 41.0 and r.json()["version"] == 2
    assert r.headers["ETag"] == '"v2"'
    stale = client.patch(url, json={"name": "Again"}, headers=logistics.headers | {"If-Match": '"v1"'})
    assert stale.status_code == 412
    assert client.get(url, headers=logistics.headers).json()["name"] == "Renamed"
    for body, field in (({"lat": 123}, "lat"), ({"name": None}, "name"), ({"kind": "depot"}, "kind")):
        r = client.patch(url, json=body, headers=logistics.headers | {"If-Match": '"v2"'})
        assert r.status_code == 422 and _field(r) == field, body
    assert client.get(url, headers=logistics.headers).json()["version"] == 2


def test_deactivate_keeps_the_site_and_activate_restores_it(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    org = factory.org()
    site = _create(client, admin, org.id)
    url = f"/v1/sites/{site['id']}"
    r = client.post(f"{url}/deactivate", headers=admin.headers)
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["version"] == 2
    assert client.get(url, headers=admin.headers).json()["active"] is False
    assert client.delete(url, headers=admin.headers).status_code == 405
    # While the owner has left, the site cannot come back.
    assert client.post(f"/v1/organizations/{org.id}/leave", headers=admin.headers).status_code == 200
    assert client.post(f"{url}/activate", headers=admin.headers).status_code == 409
    assert client.post(f"/v1/organizations/{org.id}/join", headers=admin.headers).status_code == 200
    r = client.post(f"{url}/activate", headers=admin.headers)
    assert r.status_code == 200 and r.json()["active"] is True


def test_writes_leave_audit_events(client: TestClient, factory: Factory) -> None:
    admin, logistics = factory.actor("admin"), factory.actor("logistics")
    site = _create(client, logistics, factory.org().id)
    client.patch(f"/v1/sites/{site['id']}", json={"name": "Dock B"}, headers=logistics.headers | {"If-Match": '"v1"'})
    client.post(f"/v1/sites/{site['id']}/deactivate", headers=logistics.headers)
    events = _audit(client, admin, object_id=str(site["id"]))
    assert [e["action"] for e in events] == ["site.create", "site.update", "site.deactivate"]
    assert all(e["actor_key_id"] == logistics.key_id for e in events)
    assert events[0]["before"] is None and events[0]["after"]["name"] == "North depot"
    assert events[1]["before"]["name"] == "North depot" and events[1]["after"]["name"] == "Dock B"
    assert events[2]["before"]["active"] is True and events[2]["after"]["active"] is False


def test_requester_and_donor_see_only_their_own_sites(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    requester, donor = factory.actor("requester"), factory.actor("donor")
    assert requester.organization_id is not None and donor.organization_id is not None
    own = _create(client, admin, requester.organization_id, kind="hospital_dock", name="Own dock")
    donor_site = _create(client, admin, donor.organization_id, kind="donor_site", name="Donor yard")
    foreign = _create(client, admin, factory.org().id, name="Foreign depot")

    assert client.get(f"/v1/sites/{own['id']}", headers=requester.headers).status_code == 200
    for site_id in (foreign["id"], donor_site["id"], 999_999):
        r = client.get(f"/v1/sites/{site_id}", headers=requester.headers)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert [s["id"] for s in client.get("/v1/sites", headers=requester.headers).json()["items"]] == [own["id"]]
    # Filters cannot widen the view.
    leak = client.get("/v1/sites", params={"organization_id": foreign["organization_id"]}, headers=requester.headers)
    assert leak.status_code == 200 and leak.json()["items"] == []
    assert [s["id"] for s in client.get("/v1/sites", headers=donor.headers).json()["items"]] == [donor_site["id"]]
    assert client.get(f"/v1/sites/{own['id']}", headers=donor.headers).status_code == 404


def test_driver_sees_no_site_until_shipments_are_assigned(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    driver = factory.actor("driver")
    assert driver.organization_id is not None
    own_org_site = _create(client, admin, driver.organization_id)
    r = client.get("/v1/sites", headers=driver.headers)
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}
    assert client.get(f"/v1/sites/{own_org_site['id']}", headers=driver.headers).status_code == 404


def test_only_admin_and_logistics_write_sites(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    site = _create(client, admin, factory.org().id)
    for role in ("requester", "donor", "driver"):
        actor = factory.actor(role)
        assert actor.organization_id is not None
        own = _create(client, admin, actor.organization_id)
        r = client.post("/v1/sites", json=_site_body(actor.organization_id), headers=actor.headers)
        assert r.status_code == 403, role
        assert r.headers["content-type"].startswith("application/problem+json")
        assert client.patch(f"/v1/sites/{own['id']}", json={"name": "x"}, headers=actor.headers).status_code == 403
        assert client.post(f"/v1/sites/{own['id']}/deactivate", headers=actor.headers).status_code == 403
    assert client.get("/v1/sites").status_code == 401
    assert client.get(f"/v1/sites/{site['id']}", headers=admin.headers).json()["version"] == 1


def test_pagination_is_stable(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    org = factory.org()
    created = [_create(client, admin, org.id, name=f"Site {n}")["id"] for n in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/sites", params=params, headers=admin.headers).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created
