"""Limits: body size (413), lines per request and page size (422), per-key rate limits and failed
authentication per client address (429 with Retry-After)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.config import Settings
from app.db import transaction
from app.items.models import Item
from app.main import create_app
from app.ratelimit import RateLimiter, retry_after
from app.requests.models import SupplyRequest
from app.sites.models import Site
from tests.factories import Factory

MiB = 1024 * 1024
_seq = itertools.count(1)


def _requester_world(factory: Factory, engine: Engine) -> tuple[dict[str, str], int, int]:
    requester = factory.actor("requester")
    site = Site(organization_id=requester.organization_id, name=f"d-{next(_seq)}", kind="hospital_dock", lat=1, lon=2)
    item = Item(sku=f"LIM-{next(_seq)}", name="Mask", category="ppe")
    with transaction(engine) as s:
        s.add_all([site, item])
        s.flush()
        return requester.headers, site.id, item.id  # type: ignore[return-value]


def _requests(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(SupplyRequest)).one()


def _is_problem(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status


# ---------------------------------------------------------------- body size, lines, page size


def test_a_body_over_1_mib_is_413(client: TestClient, factory: Factory, engine: Engine) -> None:
    headers, site, item = _requester_world(factory, engine)
    padding = "x" * MiB
    big = {"site_id": site, "justification": padding, "lines": [{"item_id": item, "quantity": 1}]}
    _is_problem(client.post("/v1/requests", json=big, headers=headers), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b" " * (MiB // 4)
        yield b"{}"

    streamed = client.post("/v1/requests", content=chunks(), headers=headers | {"content-type": "application/json"})
    _is_problem(streamed, 413)
    assert _requests(engine) == 0


def test_imports_take_up_to_20_mib(client: TestClient, factory: Factory) -> None:
    headers = factory.actor("logistics").headers | {"content-type": "text/csv"}
    two_mib = b"sku,name\n" + b"x" * (2 * MiB)
    assert client.post("/v1/imports/items", content=two_mib, headers=headers).status_code != 413
    over = b"x" * (20 * MiB + 1)
    _is_problem(client.post("/v1/imports/items", content=over, headers=headers), 413)


def test_more_than_1000_lines_is_422(client: TestClient, factory: Factory, engine: Engine) -> None:
    headers, site, item = _requester_world(factory, engine)

    def body(n: int) -> dict[str, Any]:
        return {"site_id": site, "lines": [{"item_id": item, "quantity": 1}] * n}

    r = client.post("/v1/requests", json=body(1001), headers=headers)
    _is_problem(r, 422)
    assert [e["field"] for e in r.json()["errors"]] == ["lines"]
    assert _requests(engine) == 0
    ok = client.post("/v1/requests", json=body(1000), headers=headers)
    assert ok.status_code == 201 and len(ok.json()["lines"]) == 1000


@pytest.mark.parametrize("path", ["/v1/organizations", "/v1/requests", "/v1/audit-events", "/v1/shipments"])
def test_page_size_over_500_is_422(client: TestClient, factory: Factory, path: str) -> None:
    headers = factory.actor("admin").headers
    r = client.get(path, params={"limit": 501}, headers=headers)
    _is_problem(r, 422)
    assert r.json()["errors"][0]["field"] == "limit"
    assert client.get(path, params={"limit": 500}, headers=headers).status_code == 200


# ---------------------------------------------------------------- rate limits


def _limited_client(engine: Engine, **limits: int) -> TestClient:
    settings = Settings(
        **{"rate_limit_writes_per_minute": 0, "rate_limit_reads_per_minute": 0, "auth_failures_per_minute": 0} | limits
    )
    return TestClient(create_app(engine=engine, settings=settings), raise_server_exceptions=False)


def _assert_429(r: Any) -> None:
    _is_problem(r, 429)
    assert r.json()["type"].endswith("/too-many-requests")
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_writes_beyond_the_limit_get_429_and_do_nothing(engine: Engine, factory: Factory) -> None:
    headers, site, item = _requester_world(factory, engine)
    body = {"site_id": site, "lines": [{"item_id": item, "quantity": 1}]}
    other_headers, other_site, _ = _requester_world(factory, engine)
    with _limited_client(engine, rate_limit_writes_per_minute=3) as client:
        assert [client.post("/v1/requests", json=body, headers=headers).status_code for _ in range(3)] == [201] * 3
        refused = client.post("/v1/requests", json=body, headers=headers)
        _assert_429(refused)
        assert 15 <= int(refused.headers["Retry-After"]) <= 20  # one write every 60/3 s (less the time spent)
        assert _requests(engine) == 3
        # Reads are counted separately (off here), and other keys have their own allowance.
        assert client.get("/v1/requests", headers=headers).status_code == 200
        other = {"site_id": other_site, "lines": [{"item_id": item, "quantity": 1}]}
        assert client.post("/v1/requests", json=other, headers=other_headers).status_code == 201


def test_polling_beyond_the_limit_gets_429(engine: Engine, factory: Factory) -> None:
    driver = factory.actor("driver").headers
    with _limited_client(engine, rate_limit_reads_per_minute=5) as client:
        polls = [client.get("/v1/shipments", params={"updated_since": "0"}, headers=driver) for _ in range(6)]
        assert [p.status_code for p in polls[:5]] == [200] * 5
        _assert_429(polls[5])
        assert 7 <= int(polls[5].headers["Retry-After"]) <= 12  # one poll every 60/5 s


def test_failed_authentication_is_limited_per_address_but_valid_keys_pass(engine: Engine, factory: Factory) -> None:
    admin = factory.actor("admin").headers
    bad = {"Authorization": "Bearer cs_not-a-key"}
    with _limited_client(engine, auth_failures_per_minute=2) as client:
        assert client.get("/v1/organizations", headers=bad).status_code == 401
        assert client.get("/v1/organizations").status_code == 401  # no credentials at all is a failure too
        _assert_429(client.get("/v1/organizations", headers=bad))
        _assert_429(client.post("/v1/organizations", json={}, headers=bad))
        assert 25 <= int(client.get("/v1/organizations", headers=bad).headers["Retry-After"]) <= 30
        # The address is not blocked for a caller with a valid key (many clients share one NAT address).
        assert client.get("/v1/organizations", headers=admin).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_limits_of_zero_are_off(engine: Engine, factory: Factory) -> None:
    admin = factory.actor("admin").headers
    with _limited_client(engine) as client:
        assert {client.get("/v1/organizations", headers=admin).status_code for _ in range(30)} == {200}
        assert {client.get("/v1/organizations").status_code for _ in range(30)} == {401}


def test_the_defaults_are_on() -> None:
    defaults = {name: field.default for name, field in Settings.model_fields.items()}  # not the environment's
    assert (defaults["rate_limit_writes_per_minute"], defaults["rate_limit_reads_per_minute"]) == (600, 6000)
    assert defaults["auth_failures_per_minute"] == 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_continuously() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)  # one a second, bursts of 60
    assert all(limiter.take("k") is None for _ in range(60))
    wait = limiter.take("k")
    assert wait is not None and retry_after(wait) == 1
    clock.now += 0.5
    assert limiter.take("k") is not None
    clock.now += 0.5
    assert limiter.take("k") is None and limiter.take("k") is not None
    assert limiter.take("another key") is None
    clock.now += 3600  # a full bucket again, never more than its capacity
    assert sum(limiter.take("k") is None for _ in range(100)) == 60
