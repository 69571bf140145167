from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import Factory


def test_admin_creates_and_lists_organizations(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    r = client.post(
        "/v1/organizations",
        json={"name": "St. Mary", "kind": "hospital", "region": "north", "equity_weight": 1.5},
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/organizations/{r.json()['id']}"
    listed = client.get("/v1/organizations", headers=admin.headers).json()
    assert [o["name"] for o in listed["items"]] == ["St. Mary"]
    assert listed["next_cursor"] is None


def test_leave_deactivates_never_deletes(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    org = factory.org()
    r = client.post(f"/v1/organizations/{org.id}/leave", headers=admin.headers)
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get(f"/v1/organizations/{org.id}", headers=admin.headers).json()["active"] is False
    r = client.post(f"/v1/organizations/{org.id}/join", headers=admin.headers)
    assert r.json()["active"] is True


def test_equity_weight_bounds(client: TestClient, factory: Factory) -> None:
    logistics = factory.actor("logistics")
    org = factory.org()
    for bad in (0, -1, 10.5):
        r = client.put(
            f"/v1/organizations/{org.id}/equity-weight", json={"equity_weight": bad}, headers=logistics.headers
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "equity_weight"
    r = client.put(f"/v1/organizations/{org.id}/equity-weight", json={"equity_weight": 2.5}, headers=logistics.headers)
    assert r.status_code == 200 and r.json()["equity_weight"] == 2.5


def test_requester_sees_only_own_organization(client: TestClient, factory: Factory) -> None:
    mine = factory.actor("requester")
    other = factory.org()
    assert client.get(f"/v1/organizations/{other.id}", headers=mine.headers).status_code == 404
    ids = [o["id"] for o in client.get("/v1/organizations", headers=mine.headers).json()["items"]]
    assert ids == [mine.organization_id]


def test_pagination_is_stable_and_complete(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    for _ in range(7):
        factory.org()
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/organizations", params=params, headers=admin.headers).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 7
    assert client.get("/v1/organizations", params={"limit": 501}, headers=admin.headers).status_code == 422
    bad = client.get("/v1/organizations", params={"cursor": "garbage!"}, headers=admin.headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_revoked_key_gets_401(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    victim = factory.actor("logistics")
    assert client.get("/v1/organizations", headers=victim.headers).status_code == 200
    assert client.post(f"/v1/api-keys/{victim.key_id}/revoke", headers=admin.headers).status_code == 200
    r = client.get("/v1/organizations", headers=victim.headers)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


def test_if_none_match_gives_304_until_the_record_changes(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    org = factory.org()
    first = client.get(f"/v1/organizations/{org.id}", headers=admin.headers)
    etag = first.headers["ETag"]
    again = client.get(f"/v1/organizations/{org.id}", headers=admin.headers | {"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    client.patch(f"/v1/organizations/{org.id}", json={"region": "south"}, headers=admin.headers | {"If-Match": etag})
    changed = client.get(f"/v1/organizations/{org.id}", headers=admin.headers | {"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["region"] == "south"


def test_id_beyond_the_database_integer_range_is_404(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    r = client.get("/v1/organizations/99999999999", headers=admin.headers)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
