from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.usage import service
from app.usage.models import UsageReport
from tests.conftest import Actor
from tests.factories import Factory
from tests.test_requests import audit_actions, count, make_item

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def report(client: TestClient, actor: Actor, item_id: int, on_hand: int, **extra: Any) -> Any:
    return client.post(
        "/v1/usage-reports", json={"item_id": item_id, "on_hand": on_hand, **extra}, headers=actor.headers
    )


@pytest.fixture
def requester(factory: Factory) -> Actor:
    return factory.actor("requester")


@pytest.fixture
def item(engine: Engine) -> int:
    return make_item(engine)


def test_reported_daily_usage_gives_days_of_supply(client: TestClient, requester: Actor, item: int) -> None:
    r = report(client, requester, item, 900, daily_usage=150, reported_at=ago(hours=1))
    assert r.status_code == 201, r.text
    out = r.json()
    assert r.headers["Location"] == f"/v1/usage-reports/{out['id']}"
    assert out["organization_id"] == requester.organization_id
    assert (out["days_of_supply"], out["estimated_daily_usage"]) == (6.0, None)
    assert client.get(f"/v1/usage-reports/{out['id']}", headers=requester.headers).json() == out


def test_daily_usage_estimated_from_previous_report(client: TestClient, requester: Actor, item: int) -> None:
    first = report(client, requester, item, 1000, reported_at=ago(days=4)).json()
    assert (first["estimated_daily_usage"], first["days_of_supply"]) == (None, None)  # nothing to compare with
    second = report(client, requester, item, 600, reported_at=ago(days=2)).json()
    assert second["estimated_daily_usage"] == pytest.approx(200.0)
    assert second["days_of_supply"] == pytest.approx(3.0)
    rose = report(client, requester, item, 800, reported_at=ago(days=1)).json()
    assert (rose["estimated_daily_usage"], rose["days_of_supply"]) == (None, None)
    flat = report(client, requester, item, 800).json()  # reported_at defaults to now
    assert (flat["estimated_daily_usage"], flat["days_of_supply"]) == (0.0, None)
    zero = report(client, requester, item, 800, daily_usage=0).json()
    assert zero["days_of_supply"] is None


def test_estimate_uses_the_report_just_before_and_only_same_org_and_item(
    client: TestClient, factory: Factory, engine: Engine, requester: Actor, item: int
) -> None:
    other_item = make_item(engine)
    neighbour = factory.actor("requester")
    report(client, requester, item, 500, reported_at=ago(days=10))
    report(client, requester, item, 300, reported_at=ago(days=2))
    report(client, requester, other_item, 5, reported_at=ago(days=1))
    report(client, neighbour, item, 1, reported_at=ago(days=1))
    # Backdated between the two: compares with the one 10 days ago → (500 − 400) / 7 days.
    backdated = report(client, requester, item, 400, reported_at=ago(days=3)).json()
    assert backdated["estimated_daily_usage"] == pytest.approx(100 / 7)
    latest = report(client, requester, item, 250, reported_at=ago()).json()
    assert latest["estimated_daily_usage"] == pytest.approx(25.0)  # (300 − 250) over 2 days


def test_estimate_is_net_of_deliveries(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, requester: Actor, item: int
) -> None:
    seen: list[tuple[Any, ...]] = []

    def delivered(session: Session, org_id: int, item_id: int, start: datetime, end: datetime) -> int:
        seen.append((org_id, item_id, end - start))
        return 200

    monkeypatch.setattr(service, "_deliveries_received_between", delivered)
    report(client, requester, item, 100, reported_at=ago(days=2))
    out = report(client, requester, item, 250, reported_at=ago()).json()
    assert out["estimated_daily_usage"] == pytest.approx(25.0)  # 100 + 200 received − 250, over 2 days
    assert out["days_of_supply"] == pytest.approx(10.0)
    assert seen == [(requester.organization_id, item, timedelta(days=2))]


def test_estimate_and_days_of_supply_rules() -> None:
    start = NOW - timedelta(days=2)
    assert (
        service.estimate_daily_usage(previous_on_hand=100, previous_at=start, on_hand=50, at=start, received=0) is None
    )
    assert service.days_of_supply(10, None) is None and service.days_of_supply(10, 0) is None
    assert service.days_of_supply(10, 4) == 2.5


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"on_hand": -1}, "on_hand"),
        ({"on_hand": "lots"}, "on_hand"),
        ({"daily_usage": -2}, "daily_usage"),
        ({"item_id": 999_999}, "item_id"),
        ({"reported_at": "2026-01-01T00:00:00"}, "reported_at"),
        ({"reported_at": (NOW + timedelta(days=1)).isoformat()}, "reported_at"),
        ({"organization_id": 999_999}, "organization_id"),
        ({"site_id": 1}, "site_id"),
    ],
)
def test_bad_input_is_rejected_naming_the_field(
    client: TestClient, engine: Engine, requester: Actor, item: int, payload: dict[str, Any], field: str
) -> None:
    r = client.post("/v1/usage-reports", json={"item_id": item, "on_hand": 10} | payload, headers=requester.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]]
    assert count(engine, UsageReport) == 0


def test_missing_fields(client: TestClient, engine: Engine, requester: Actor) -> None:
    r = client.post("/v1/usage-reports", json={}, headers=requester.headers)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"item_id", "on_hand"}
    assert count(engine, UsageReport) == 0


def test_roles_and_cross_org(client: TestClient, factory: Factory, requester: Actor, item: int) -> None:
    mine = report(client, requester, item, 10).json()
    for role in ("admin", "logistics", "donor", "driver"):
        assert report(client, factory.actor(role), item, 10).status_code == 403, role
    for role in ("donor", "driver"):
        actor = factory.actor(role)
        assert client.get("/v1/usage-reports", headers=actor.headers).status_code == 403
        assert client.get(f"/v1/usage-reports/{mine['id']}", headers=actor.headers).status_code == 403
    stranger = factory.actor("requester")
    theirs = report(client, stranger, item, 20).json()
    assert client.get(f"/v1/usage-reports/{mine['id']}", headers=stranger.headers).status_code == 404
    listed = client.get(
        "/v1/usage-reports", params={"organization_id": requester.organization_id}, headers=stranger.headers
    )
    assert listed.json()["items"] == []
    assert [x["id"] for x in client.get("/v1/usage-reports", headers=stranger.headers).json()["items"]] == [
        theirs["id"]
    ]
    for role in ("admin", "logistics"):
        seen = client.get("/v1/usage-reports", headers=factory.actor(role).headers).json()["items"]
        assert [x["id"] for x in seen] == [mine["id"], theirs["id"]]


def test_list_filters(client: TestClient, engine: Engine, factory: Factory) -> None:
    north = factory.actor("requester", organization_id=factory.org(region="north").id)
    south = factory.actor("requester", organization_id=factory.org(region="south").id)
    mask, food = make_item(engine), make_item(engine)
    a = report(client, north, mask, 10, reported_at=ago(days=3)).json()["id"]
    b = report(client, north, food, 10, reported_at=ago(days=1)).json()["id"]
    c = report(client, south, mask, 10, reported_at=ago(hours=1)).json()["id"]
    logistics = factory.actor("logistics")

    def ids(**params: Any) -> list[int]:
        r = client.get("/v1/usage-reports", params=params, headers=logistics.headers)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids(organization_id=north.organization_id) == [a, b]
    assert ids(item_id=mask) == [a, c]
    assert ids(region="south") == [c]
    assert ids(reported_after=ago(days=2)) == [b, c]
    r = client.get("/v1/usage-reports", params={"reported_after": "2026-01-01T00:00:00"}, headers=logistics.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reported_after"


def test_latest_usage_per_org_and_item(client: TestClient, engine: Engine, factory: Factory, requester: Actor) -> None:
    mask, food = make_item(engine), make_item(engine)
    other = factory.actor("requester")
    newest = report(client, requester, mask, 30, daily_usage=3, reported_at=ago(days=1)).json()["id"]
    report(client, requester, mask, 50, reported_at=ago(days=5))  # posted later but older
    food_report = report(client, requester, food, 7, reported_at=ago(days=2)).json()["id"]
    other_report = report(client, other, mask, 9).json()["id"]
    with Session(engine) as session:
        latest = service.latest_usage(session)
        assert {key: r.id for key, r in latest.items()} == {
            (requester.organization_id, mask): newest,
            (requester.organization_id, food): food_report,
            (other.organization_id, mask): other_report,
        }
        only = service.latest_usage(session, organization_ids=[requester.organization_id], item_ids=[mask])  # type: ignore[list-item]
        assert list(only) == [(requester.organization_id, mask)]
        assert service.effective_daily_usage(only[(requester.organization_id, mask)]) == 3  # type: ignore[index]


def test_audit_event_on_create(client: TestClient, engine: Engine, requester: Actor, item: int) -> None:
    report(client, requester, item, 10)
    assert audit_actions(engine).count("usage_report.create") == 1
