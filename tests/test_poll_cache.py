"""Shipment polls answered 304 from memory (app/shipments/poll_cache.py, poll_middleware.py), on SQLite and
PostgreSQL: a hit looks exactly like the full route's 304, and no stale answer survives a change made in
this process (at once) or by another one (within the staleness bound), a revocation, a driver change, or
a database the cache can no longer read. Every test checks `cache.hits`, so it knows which path answered."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from app.config import Settings
from app.main import create_app
from app.shipments.poll_cache import ShipmentPollCache
from tests.conftest import Actor
from tests.factories import Factory
from tests.test_shipments import approved

MAX_STALENESS_S = 0.5
IGNORED_HEADERS = {"date", "server"}


@pytest.fixture
def fast_client(engine: Engine) -> Iterator[TestClient]:
    """The app with a quick refresher (so tests need not wait long) and no rate limits."""
    settings = Settings(
        rate_limit_writes_per_minute=0,
        rate_limit_reads_per_minute=0,
        auth_failures_per_minute=0,
        poll_cache_refresh_seconds=0.02,
        poll_cache_max_staleness_seconds=MAX_STALENESS_S,
    )
    with TestClient(create_app(engine=engine, settings=settings), raise_server_exceptions=False) as c:
        yield c


def cache_of(client: TestClient) -> ShipmentPollCache:
    return client.app.state.poll_cache  # type: ignore[attr-defined,no-any-return]


def until(check: Callable[[], Any], what: str, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.01)


def poll(client: TestClient, shipment_id: int, actor: Actor, etag: str, **extra: str) -> Any:
    return client.get(f"/v1/shipments/{shipment_id}", headers=actor.headers | {"If-None-Match": etag} | extra)


def warm(client: TestClient, shipment_id: int, actor: Actor, etag: str) -> Any:
    """Poll until an answer comes from memory; that answer."""
    cache = cache_of(client)

    def hit() -> Any:
        before = cache.hits
        r = poll(client, shipment_id, actor, etag)
        assert r.status_code == 304, r.text
        return r if cache.hits == before + 1 else None

    return until(hit, "a poll answered from memory")


def simulate_other_process_change(engine: Engine, shipment_id: int) -> None:
    """What another API process's write leaves in the database (version + feed position), written on a
    plain connection: no session commit hook in this process hears of it."""
    with engine.begin() as conn:
        seq = conn.execute(
            text("UPDATE change_counters SET value = value + 1 WHERE name = 'shipments' RETURNING value")
        ).scalar_one()
        conn.execute(
            text("UPDATE shipments SET version = version + 1, change_seq = :seq WHERE id = :id"),
            {"seq": seq, "id": shipment_id},
        )


def test_a_repeated_poll_is_answered_from_memory_exactly_like_the_full_route(
    fast_client: TestClient, factory: Factory
) -> None:
    x = approved(fast_client, factory)
    cache = cache_of(fast_client)
    first = fast_client.get(f"/v1/shipments/{x.s_a}", headers=x.logistics.headers)
    etag = first.headers["ETag"]
    full = poll(fast_client, x.s_a, x.logistics, etag, **{"X-Request-ID": "phone-1"})
    assert full.status_code == 304
    hit = warm(fast_client, x.s_a, x.logistics, etag)
    again = poll(fast_client, x.s_a, x.logistics, etag, **{"X-Request-ID": "phone-2"})
    assert again.status_code == 304 and again.content == b""
    assert cache.hits >= 2
    names = {k for k in full.headers if k not in IGNORED_HEADERS}
    assert {k for k in again.headers if k not in IGNORED_HEADERS} == names
    assert {k: again.headers[k] for k in names - {"x-request-id"}} == {
        k: full.headers[k] for k in names - {"x-request-id"}
    }
    assert again.headers["x-request-id"] == "phone-2" and full.headers["x-request-id"] == "phone-1"
    assert len(hit.headers["x-request-id"]) == 32  # generated when the client sends none
    # A list of tags and weak tags match as on the full route; another tag gets the full answer.
    assert poll(fast_client, x.s_a, x.logistics, f'W/"v0", W/{etag}').status_code == 304
    other = poll(fast_client, x.s_a, x.logistics, '"v0"')
    assert other.status_code == 200 and other.json()["id"] == x.s_a
    # Hits are counted as 304s of the route in the request metrics, and on their own.
    metrics = fast_client.get("/metrics").text
    assert f"crisis_shipment_poll_cache_hits_total {float(cache.hits)}" in metrics
    route_304 = 'crisis_http_requests_total{method="GET",route="/v1/shipments/{shipment_id}",status="304"}'
    counted = next(line for line in metrics.splitlines() if line.startswith(route_304))
    assert float(counted.split()[-1]) >= cache.hits + 1  # the hits and the full route's 304s


def test_a_change_made_here_is_never_answered_304_from_memory(fast_client: TestClient, factory: Factory) -> None:
    x = approved(fast_client, factory)
    etag = fast_client.get(f"/v1/shipments/{x.s_a}", headers=x.logistics.headers).headers["ETag"]
    warm(fast_client, x.s_a, x.logistics, etag)
    moved = fast_client.post(
        f"/v1/shipments/{x.s_a}/events", json={"status": "dispatched"}, headers=x.logistics.headers | {"If-Match": etag}
    )
    assert moved.status_code == 201, moved.text
    fresh = poll(fast_client, x.s_a, x.logistics, etag)  # straight after the write's answer
    assert fresh.status_code == 200 and fresh.json()["status"] == "dispatched"
    assert fresh.headers["ETag"] == moved.headers["ETag"] != etag
    warm(fast_client, x.s_a, x.logistics, moved.headers["ETag"])  # the new version is cached in turn


def test_a_change_made_by_another_process_is_seen_within_the_staleness_bound(
    fast_client: TestClient, factory: Factory
) -> None:
    x = approved(fast_client, factory)
    engine: Engine = fast_client.app.state.engine  # type: ignore[attr-defined]
    etag = fast_client.get(f"/v1/shipments/{x.s_a}", headers=x.logistics.headers).headers["ETag"]
    warm(fast_client, x.s_a, x.logistics, etag)
    warm(
        fast_client,
        x.s_b,
        x.logistics,
        fast_client.get(f"/v1/shipments/{x.s_b}", headers=x.logistics.headers).headers["ETag"],
    )
    simulate_other_process_change(engine, x.s_a)
    changed_at = time.monotonic()
    fresh = until(
        lambda: (r := poll(fast_client, x.s_a, x.logistics, etag)).status_code == 200 and r,
        "the other process's change",
        timeout_s=MAX_STALENESS_S + 2,
    )
    assert fresh.headers["ETag"] == '"v2"' and fresh.json()["version"] == 2
    assert time.monotonic() - changed_at < MAX_STALENESS_S + 2
    # Only that shipment was forgotten: the other one is still answered from memory at once.
    before = cache_of(fast_client).hits
    s_b_etag = '"v1"'
    assert poll(fast_client, x.s_b, x.logistics, s_b_etag).status_code == 304
    assert cache_of(fast_client).hits == before + 1


def test_answers_are_per_key_and_follow_the_driver_assignment(fast_client: TestClient, factory: Factory) -> None:
    x = approved(fast_client, factory)
    driver = factory.actor("driver")
    assigned = fast_client.post(
        f"/v1/shipments/{x.s_a}/assign",
        json={"driver_key_id": driver.key_id},
        headers=x.logistics.headers | {"If-Match": '"v1"'},
    )
    assert assigned.status_code == 200, assigned.text
    etag = assigned.headers["ETag"]
    warm(fast_client, x.s_a, driver, etag)
    hits = cache_of(fast_client).hits
    # Another driver, a requester of an uninvolved organisation: the full route, which says 404.
    assert poll(fast_client, x.s_a, factory.actor("driver"), etag).status_code == 404
    assert poll(fast_client, x.s_a, factory.actor("requester"), etag).status_code == 404
    # Another logistics key may see it, but learns that from the full route, not from the driver's entry.
    assert poll(fast_client, x.s_a, factory.actor("logistics"), etag).status_code == 304
    assert cache_of(fast_client).hits == hits
    unassigned = fast_client.post(
        f"/v1/shipments/{x.s_a}/assign", json={"driver_key_id": None}, headers=x.logistics.headers | {"If-Match": etag}
    )
    assert unassigned.status_code == 200, unassigned.text
    assert poll(fast_client, x.s_a, driver, etag).status_code == 404  # no longer the driver's shipment


def test_a_revoked_key_is_refused_at_once(fast_client: TestClient, factory: Factory) -> None:
    x = approved(fast_client, factory)
    phone = factory.actor("logistics")
    etag = fast_client.get(f"/v1/shipments/{x.s_a}", headers=phone.headers).headers["ETag"]
    warm(fast_client, x.s_a, phone, etag)
    admin = factory.actor("admin")
    revoked = fast_client.post(f"/v1/api-keys/{phone.key_id}/revoke", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    assert poll(fast_client, x.s_a, phone, etag).status_code == 401


def test_a_revocation_by_another_process_is_seen_within_the_staleness_bound(
    fast_client: TestClient, factory: Factory
) -> None:
    x = approved(fast_client, factory)
    engine: Engine = fast_client.app.state.engine  # type: ignore[attr-defined]
    phone = factory.actor("logistics")
    etag = fast_client.get(f"/v1/shipments/{x.s_a}", headers=phone.headers).headers["ETag"]
    warm(fast_client, x.s_a, phone, etag)
    with engine.begin() as conn:  # what keys.service.revoke_key leaves behind, written elsewhere
        conn.execute(text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"), {"id": phone.key_id})
        conn.execute(text("UPDATE change_counters SET value = value + 1 WHERE name = 'api_keys'"))
    until(lambda: poll(fast_client, x.s_a, phone, etag).status_code == 401, "401", timeout_s=MAX_STALENESS_S + 2)


def test_without_a_working_refresher_every_poll_takes_the_full_route(fast_client: TestClient, factory: Factory) -> None:
    x = approved(fast_client, factory)
    engine: Engine = fast_client.app.state.engine  # type: ignore[attr-defined]
    cache = cache_of(fast_client)
    etag = fast_client.get(f"/v1/shipments/{x.s_a}", headers=x.logistics.headers).headers["ETag"]
    warm(fast_client, x.s_a, x.logistics, etag)
    with engine.begin() as conn:  # the refresher's reads now fail (as with the database unreachable)
        conn.execute(text("ALTER TABLE change_counters RENAME TO change_counters_away"))
    try:
        time.sleep(MAX_STALENESS_S + 0.2)
        hits = cache.hits
        for _ in range(5):
            assert poll(fast_client, x.s_a, x.logistics, etag).status_code == 304  # the full route's answer
        assert cache.hits == hits
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE change_counters_away RENAME TO change_counters"))
    warm(fast_client, x.s_a, x.logistics, etag)  # and it comes back by itself


def test_cached_polls_count_against_the_read_rate_limit(engine: Engine, factory: Factory) -> None:
    settings = Settings(rate_limit_writes_per_minute=0, rate_limit_reads_per_minute=30, auth_failures_per_minute=0)
    with TestClient(create_app(engine=engine, settings=settings), raise_server_exceptions=False) as client:
        x = approved(client, factory)
        phone = factory.actor("logistics")
        etag = client.get(f"/v1/shipments/{x.s_a}", headers=phone.headers).headers["ETag"]
        statuses = [poll(client, x.s_a, phone, etag).status_code for _ in range(40)]
        assert cache_of(client).hits > 0
        assert statuses[:29] == [304] * 29  # 30 reads a minute, the first GET included
        assert set(statuses[29:]) == {429}
