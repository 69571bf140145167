"""Bad input gets a 4xx problem+json naming the offending field, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.items.models import Item
from app.sites.models import Site
from tests.conftest import Actor, row_counts


def _ids(engine: Engine, requester: Actor, donor: Actor) -> dict[str, int]:
    with Session(engine) as s:
        item = s.exec(select(Item).where(Item.sku == "N95")).one()
        dock = s.exec(select(Site).where(Site.organization_id == requester.organization_id)).first()
        donor_site = s.exec(select(Site).where(Site.organization_id == donor.organization_id)).first()
        depot = s.exec(select(Site).where(Site.kind == "depot")).first()
        assert dock and donor_site and depot and item.id
        org_id = dock.organization_id
    return {"item": item.id, "dock": dock.id, "donor_site": donor_site.id, "depot": depot.id, "org": org_id}


def _request(ids: dict[str, int], **line: Any) -> dict[str, Any]:
    base = {"item_id": ids["item"], "quantity": 10, "priority": "high"}
    return {"site_id": ids["dock"], "lines": [base | line]}


# (role, method, path, body builder, expected status, expected field)
CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("requester", "POST", "/v1/requests", lambda i: _request(i, quantity=0), 422, "lines[0].quantity"),
    ("requester", "POST", "/v1/requests", lambda i: _request(i, quantity=-5), 422, "lines[0].quantity"),
    ("requester", "POST", "/v1/requests", lambda i: _request(i, quantity="ten"), 422, "lines[0].quantity"),
    ("requester", "POST", "/v1/requests", lambda i: _request(i, item_id=99999), 422, "lines[0].item_id"),
    ("requester", "POST", "/v1/requests", lambda i: _request(i) | {"site_id": 99999}, 422, "site_id"),
    (
        "requester",
        "POST",
        "/v1/requests",
        lambda i: _request(i, needed_by="2030-01-01T10:00:00"),
        422,
        "lines[0].needed_by",
    ),
    ("requester", "POST", "/v1/requests", lambda i: {"site_id": i["dock"]}, 422, "lines"),
    ("requester", "POST", "/v1/requests", lambda i: _request(i, priority="urgent"), 422, "lines[0].priority"),
    (
        "logistics",
        "POST",
        "/v1/sites",
        lambda i: {"organization_id": i["org"], "name": "x", "kind": "depot", "lat": 123, "lon": 0},
        422,
        "lat",
    ),
    (
        "logistics",
        "POST",
        "/v1/sites",
        lambda i: {"organization_id": i["org"], "kind": "depot", "lat": 1, "lon": 0},
        422,
        "name",
    ),
    ("logistics", "PUT", "/v1/organizations/{org}/equity-weight", lambda i: {"equity_weight": 0}, 422, "equity_weight"),
    (
        "admin",
        "POST",
        "/v1/organizations",
        lambda i: {"name": "n", "kind": "hospital", "region": "r", "equity_weight": 0},
        422,
        "equity_weight",
    ),
    (
        "logistics",
        "POST",
        "/v1/inventory/movements",
        lambda i: {"kind": "receive", "site_id": i["depot"], "item_id": i["item"], "quantity": 0},
        422,
        "quantity",
    ),
    (
        "logistics",
        "POST",
        "/v1/inventory/movements",
        lambda i: {"kind": "receive", "site_id": i["depot"], "item_id": 99999, "quantity": 5},
        422,
        "item_id",
    ),
    (
        "donor",
        "POST",
        "/v1/pledges",
        lambda i: {"item_id": i["item"], "site_id": i["donor_site"], "quantity": -1},
        422,
        "quantity",
    ),
    ("requester", "POST", "/v1/usage-reports", lambda i: {"item_id": i["item"], "on_hand": -3}, 422, "on_hand"),
]


@pytest.mark.parametrize(("role", "method", "path", "build", "status", "field"), CASES)
def test_bad_input_names_the_field_and_writes_nothing(
    client: TestClient,
    engine: Engine,
    demo: dict[str, Actor],
    role: str,
    method: str,
    path: str,
    build: Any,
    status: int,
    field: str,
) -> None:
    ids = _ids(engine, demo["requester"], demo["donor"])
    before = row_counts(engine)
    r = client.request(method, path.format(**ids), json=build(ids), headers=demo[role].headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert row_counts(engine) == before


def test_body_over_limit_is_413_and_writes_nothing(client: TestClient, engine: Engine, demo: dict[str, Actor]) -> None:
    before = row_counts(engine)
    big = b'{"site_id": 1, "justification": "' + b"x" * (5 * 1024 * 1024) + b'", "lines": []}'
    r = client.post(
        "/v1/requests", content=big, headers=demo["requester"].headers | {"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    assert row_counts(engine) == before


def test_malformed_json_is_422_problem(client: TestClient, demo: dict[str, Actor]) -> None:
    r = client.post(
        "/v1/requests", content=b"{not json", headers=demo["requester"].headers | {"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in r.text
