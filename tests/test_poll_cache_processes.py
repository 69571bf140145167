"""The shipment poll cache across real API processes on PostgreSQL: a phone polling one `uvicorn` process
(answered from that process's memory) learns of a change or a key revocation made through another
process within the cache's staleness bound (CRISIS_POLL_CACHE_MAX_STALENESS_SECONDS, default 1 s).
PostgreSQL only (several processes on one database); skipped without TEST_DATABASE_URL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.db import make_engine
from app.main import create_app
from app.migrate import upgrade
from tests.cluster_world import API_ENV
from tests.conftest import Actor, _create_pg_database, _drop_pg_database
from tests.factories import Factory
from tests.procs import Processes
from tests.test_shipments import Setup, approved

pytestmark = pytest.mark.postgres

HITS = "crisis_shipment_poll_cache_hits_total"
BOUND_S = 1.0 + 2.0  # the default staleness bound, plus room for a loaded machine


@pytest.fixture(scope="module")
def world(pg_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Setup, Factory, list[str]]]:
    url = _create_pg_database(pg_base_url)
    engine = make_engine(url)
    try:
        upgrade(url)
        factory = Factory(engine)
        with TestClient(create_app(engine=engine)) as client:
            setup = approved(client, factory)  # three shipments of a small approved plan
        with Processes(url, tmp_path_factory.mktemp("poll-procs"), env=API_ENV) as procs:
            apis = procs.start_apis(2)
            yield setup, factory, [p.base_url for p in apis]
    finally:
        engine.dispose()
        _drop_pg_database(pg_base_url, url)


def hits(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith(HITS + " "))
    return float(line.split()[-1])


def until(check: Callable[[], Any], what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)


def poll(base: str, shipment_id: int, actor: Actor, etag: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/shipments/{shipment_id}", headers=actor.headers | {"If-None-Match": etag})


def warm(base: str, shipment_id: int, actor: Actor, etag: str) -> None:
    """Poll until that process answers from memory (its hit counter moves)."""

    def hit() -> bool:
        before = hits(base)
        assert poll(base, shipment_id, actor, etag).status_code == 304
        return hits(base) > before

    until(hit, "an answer from memory", timeout_s=10)


def test_a_change_through_the_other_process_ends_the_cached_304(world: tuple[Setup, Factory, list[str]]) -> None:
    x, _factory, (writer, reader) = world
    etag = httpx.get(f"{reader}/v1/shipments/{x.s_b}", headers=x.logistics.headers).headers["ETag"]
    warm(reader, x.s_b, x.logistics, etag)
    moved = httpx.post(
        f"{writer}/v1/shipments/{x.s_b}/events",
        json={"status": "dispatched"},
        headers=x.logistics.headers | {"If-Match": etag},
    )
    assert moved.status_code == 201, moved.text
    answers: list[int] = []

    def fresh() -> httpx.Response | None:
        r = poll(reader, x.s_b, x.logistics, etag)
        answers.append(r.status_code)
        return r if r.status_code == 200 else None

    r = until(fresh, "the reader answers 200 with the new version", timeout_s=BOUND_S)
    assert r.headers["ETag"] == moved.headers["ETag"] and r.json()["status"] == "dispatched"
    assert set(answers) <= {304, 200}
    # Once the new version is out, the old one is never answered 304 again by either process.
    for base in (reader, writer, reader):
        assert poll(base, x.s_b, x.logistics, etag).status_code == 200


def test_a_revocation_through_the_other_process_ends_the_cached_304(world: tuple[Setup, Factory, list[str]]) -> None:
    x, factory, (writer, reader) = world
    phone, admin = factory.actor("logistics"), factory.actor("admin")
    etag = httpx.get(f"{reader}/v1/shipments/{x.s_p}", headers=phone.headers).headers["ETag"]
    warm(reader, x.s_p, phone, etag)
    revoked = httpx.post(f"{writer}/v1/api-keys/{phone.key_id}/revoke", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    until(lambda: poll(reader, x.s_p, phone, etag).status_code == 401, "401 from the reader", timeout_s=BOUND_S)
    assert poll(writer, x.s_p, phone, etag).status_code == 401
