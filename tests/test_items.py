from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from app.db import transaction
from app.items import service as items
from app.items.models import ItemSubstitute
from tests.conftest import Actor
from tests.factories import Factory


def _create(client: TestClient, actor: Actor, sku: str, **overrides: Any) -> dict[str, Any]:
    body = {"sku": sku, "name": f"{sku} item", "category": "ppe", "unit": "each"} | overrides
    r = client.post("/v1/items", json=body, headers=actor.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _field(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()["errors"][0]["field"]


def _substitute_rows(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.execute(select(func.count()).select_from(ItemSubstitute)).scalar_one())


def test_create_item_with_substitutes_and_read_it_back(client: TestClient, factory: Factory) -> None:
    logistics = factory.actor("logistics")
    kn95 = _create(client, logistics, "KN95", name="KN95 respirator")
    surgical = _create(client, logistics, "MASK-SURG", name="Surgical mask")
    r = client.post(
        "/v1/items",
        json={
            "sku": "N95",
            "name": "N95 respirator",
            "category": "ppe",
            "unit": "each",
            "pack_size": 20,
            "shelf_life_days": 1825,
            "substitutes": [{"sku": "KN95", "penalty": 0.3}, {"sku": "MASK-SURG", "penalty": 2}],
        },
        headers=logistics.headers,
    )
    assert r.status_code == 201, r.text
    n95 = r.json()
    assert r.headers["Location"] == f"/v1/items/{n95['id']}" and r.headers["ETag"] == '"v1"'
    assert n95["pack_size"] == 20 and n95["shelf_life_days"] == 1825 and n95["active"] is True
    assert n95["substitutes"] == [
        {"sku": "KN95", "item_id": kn95["id"], "penalty": 0.3},
        {"sku": "MASK-SURG", "item_id": surgical["id"], "penalty": 2.0},
    ]
    assert client.get(f"/v1/items/{n95['id']}", headers=logistics.headers).json() == n95
    listed = client.get("/v1/items", headers=logistics.headers).json()
    assert [i["sku"] for i in listed["items"]] == ["KN95", "MASK-SURG", "N95"]
    assert listed["items"][2] == n95 and listed["next_cursor"] is None
    # Not transitive and not symmetric: KN95 lists nothing just because N95 lists it.
    assert listed["items"][0]["substitutes"] == []


def test_duplicate_sku_is_409_and_writes_nothing(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    _create(client, admin, "GLOVE-M")
    r = client.post("/v1/items", json={"sku": "GLOVE-M", "name": "Other", "category": "ppe"}, headers=admin.headers)
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "sku"
    assert [i["name"] for i in client.get("/v1/items", headers=admin.headers).json()["items"]] == ["GLOVE-M item"]


def test_bad_item_input_is_422_naming_the_field_and_writes_nothing(
    client: TestClient, factory: Factory, engine: Engine
) -> None:
    admin = factory.actor("admin")
    _create(client, admin, "KN95")
    base = {"sku": "N95", "name": "N95", "category": "ppe"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"substitutes": [{"sku": "KN95"}, {"sku": "NOPE"}]}, "substitutes[1].sku"),
        ({"substitutes": [{"sku": "KN95", "penalty": -0.1}]}, "substitutes[0].penalty"),
        ({"substitutes": [{"sku": "N95"}]}, "substitutes[0].sku"),
        ({"substitutes": [{"sku": "KN95"}, {"sku": "KN95", "penalty": 1}]}, "substitutes[1].sku"),
        ({"pack_size": 0}, "pack_size"),
        ({"shelf_life_days": 0}, "shelf_life_days"),
        ({"category": "weapons"}, "category"),
        ({"sku": "has space"}, "sku"),
        ({"name": ""}, "name"),
        ({"colour": "blue"}, "colour"),
    ]
    for overrides, field in cases:
        r = client.post("/v1/items", json=base | overrides, headers=admin.headers)
        assert r.status_code == 422, (overrides, r.text)
        assert _field(r) == field, overrides
    assert [i["sku"] for i in client.get("/v1/items", headers=admin.headers).json()["items"]] == ["KN95"]
    assert _substitute_rows(engine) == 0
    events = client.get("/v1/audit-events", params={"object_type": "items"}, headers=admin.headers).json()["items"]
    assert [e["action"] for e in events] == ["item.create"]


def test_inactive_item_cannot_be_named_as_substitute(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    old = _create(client, admin, "OLD-MASK")
    assert client.post(f"/v1/items/{old['id']}/deactivate", headers=admin.headers).status_code == 200
    r = client.post(
        "/v1/items",
        json={"sku": "N95", "name": "N95", "category": "ppe", "substitutes": [{"sku": "OLD-MASK"}]},
        headers=admin.headers,
    )
    assert r.status_code == 422 and _field(r) == "substitutes[0].sku"


def test_patch_replaces_substitutes_and_honours_if_match(client: TestClient, factory: Factory, engine: Engine) -> None:
    logistics = factory.actor("logistics")
    _create(client, logistics, "KN95")
    _create(client, logistics, "KF94")
    n95 = _create(client, logistics, "N95", substitutes=[{"sku": "KN95", "penalty": 0.3}])
    url = f"/v1/items/{n95['id']}"
    r = client.patch(
        url,
        json={"name": "N95 (NIOSH)", "substitutes": [{"sku": "KF94", "penalty": 0.5}, {"sku": "KN95", "penalty": 0.2}]},
        headers=logistics.headers | {"If-Match": '"v1"'},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "N95 (NIOSH)" and r.json()["version"] == 2 and r.headers["ETag"] == '"v2"'
    assert [(s["sku"], s["penalty"]) for s in r.json()["substitutes"]] == [("KF94", 0.5), ("KN95", 0.2)]
    assert client.patch(url, json={"name": "x"}, headers=logistics.headers | {"If-Match": '"v1"'}).status_code == 412
    # Omitting substitutes keeps them; an empty list clears them.
    r = client.patch(url, json={"unit": "box"}, headers=logistics.headers | {"If-Match": '"v2"'})
    assert r.json()["unit"] == "box" and len(r.json()["substitutes"]) == 2
    bad = client.patch(
        url, json={"substitutes": [{"sku": "MISSING"}]}, headers=logistics.headers | {"If-Match": '"v3"'}
    )
    assert bad.status_code == 422 and _field(bad) == "substitutes[0].sku"
    assert client.patch(url, json={"sku": "N99"}, headers=logistics.headers | {"If-Match": '"v3"'}).status_code == 422
    assert (
        client.patch(url, json={"substitutes": None}, headers=logistics.headers | {"If-Match": '"v3"'}).status_code
        == 422
    )
    assert _substitute_rows(engine) == 2
    r = client.patch(url, json={"substitutes": []}, headers=logistics.headers | {"If-Match": '"v3"'})
    assert r.status_code == 200 and r.json()["substitutes"] == [] and r.json()["version"] == 4
    assert _substitute_rows(engine) == 0


def test_list_filters(client: TestClient, factory: Factory) -> None:
    requester = factory.actor("requester")
    admin = factory.actor("admin")
    _create(client, admin, "N95")
    _create(client, admin, "RICE-5KG", category="food", unit="bag")
    gel = _create(client, admin, "GEL-500", category="sanitation")
    client.post(f"/v1/items/{gel['id']}/deactivate", headers=admin.headers)

    def skus(**params: Any) -> list[str]:
        r = client.get("/v1/items", params=params, headers=requester.headers)
        assert r.status_code == 200, r.text
        return [i["sku"] for i in r.json()["items"]]

    assert skus() == ["N95", "RICE-5KG", "GEL-500"]
    assert skus(category="food") == ["RICE-5KG"]
    assert skus(sku="N95") == ["N95"]
    assert skus(active="true") == ["N95", "RICE-5KG"]
    assert skus(active="false", category="sanitation") == ["GEL-500"]


def test_roles_on_item_routes(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    item = _create(client, admin, "N95")
    for role in ("requester", "donor"):
        actor = factory.actor(role)
        assert client.get("/v1/items", headers=actor.headers).status_code == 200
        assert client.get(f"/v1/items/{item['id']}", headers=actor.headers).status_code == 200
        r = client.post("/v1/items", json={"sku": "X1", "name": "x", "category": "other"}, headers=actor.headers)
        assert r.status_code == 403, role
        assert client.patch(f"/v1/items/{item['id']}", json={"name": "y"}, headers=actor.headers).status_code == 403
        assert client.post(f"/v1/items/{item['id']}/deactivate", headers=actor.headers).status_code == 403
    driver = factory.actor("driver")
    assert client.get("/v1/items", headers=driver.headers).status_code == 403
    assert client.get(f"/v1/items/{item['id']}", headers=driver.headers).status_code == 403
    assert client.get("/v1/items/999999", headers=admin.headers).status_code == 404
    assert client.get(f"/v1/items/{item['id']}", headers=admin.headers).json()["name"] == "N95 item"


def test_writes_leave_audit_events_with_substitutes(client: TestClient, factory: Factory) -> None:
    admin, logistics = factory.actor("admin"), factory.actor("logistics")
    _create(client, logistics, "KN95")
    n95 = _create(client, logistics, "N95", substitutes=[{"sku": "KN95", "penalty": 0.3}])
    client.patch(f"/v1/items/{n95['id']}", json={"substitutes": []}, headers=logistics.headers | {"If-Match": '"v1"'})
    client.post(f"/v1/items/{n95['id']}/deactivate", headers=logistics.headers)
    client.post(f"/v1/items/{n95['id']}/activate", headers=logistics.headers)
    events = client.get(
        "/v1/audit-events", params={"object_type": "items", "object_id": str(n95["id"])}, headers=admin.headers
    ).json()["items"]
    assert [e["action"] for e in events] == ["item.create", "item.update", "item.deactivate", "item.activate"]
    assert all(e["actor_key_id"] == logistics.key_id for e in events)
    assert events[0]["before"] is None
    assert events[0]["after"]["substitutes"] == [{"sku": "KN95", "penalty": 0.3}]
    assert events[1]["before"]["substitutes"] == [{"sku": "KN95", "penalty": 0.3}]
    assert events[1]["after"]["substitutes"] == []
    assert events[2]["after"]["active"] is False and events[3]["after"]["active"] is True


def test_substitution_map_covers_active_items_only(client: TestClient, factory: Factory, engine: Engine) -> None:
    admin = factory.actor("admin")
    _create(client, admin, "KN95")
    retired = _create(client, admin, "KF94")
    _create(client, admin, "N95", substitutes=[{"sku": "KN95", "penalty": 0.3}, {"sku": "KF94", "penalty": 0.5}])
    gone = _create(client, admin, "OLD", substitutes=[{"sku": "KN95", "penalty": 1}])
    client.post(f"/v1/items/{retired['id']}/deactivate", headers=admin.headers)
    client.post(f"/v1/items/{gone['id']}/deactivate", headers=admin.headers)
    with transaction(engine) as session:
        assert items.substitution_map(session) == {"KN95": [], "N95": [("KN95", 0.3)]}
        found = items.get_by_sku(session, "N95")
        assert found is not None and found.name == "N95 item"
        assert items.get_by_sku(session, "n95") is None
