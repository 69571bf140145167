"""Idempotency-Key on writes: a retried POST has one effect and gets the first answer back."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.db import transaction, utcnow
from app.idempotency import service as idem
from app.idempotency.models import IdempotencyKey
from app.items.models import Item
from app.keys import service as keys_service
from app.requests import service as requests_service
from app.requests.models import SupplyRequest
from app.sites.models import Site
from app.usage.models import UsageReport
from tests.conftest import Actor
from tests.factories import Factory

_seq = itertools.count(1)
KEY = "Idempotency-Key"


def _site(engine: Engine, organization_id: int | None, active: bool = True) -> int:
    site = Site(organization_id=organization_id, name=f"dock-{next(_seq)}", kind="hospital_dock", lat=1, lon=2)
    site.active = active
    with transaction(engine) as s:
        s.add(site)
        s.flush()
        return site.id  # type: ignore[return-value]


def _item(engine: Engine) -> int:
    item = Item(sku=f"IDEM-{next(_seq)}", name="Surgical mask", category="ppe")
    with transaction(engine) as s:
        s.add(item)
        s.flush()
        return item.id  # type: ignore[return-value]


def _count(engine: Engine, model: Any, *where: Any) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model).where(*where)).one()


def _rows(engine: Engine) -> list[IdempotencyKey]:
    with Session(engine) as s:
        return list(s.exec(select(IdempotencyKey)).all())


@pytest.fixture
def hospital(factory: Factory, engine: Engine) -> dict[str, Any]:
    requester = factory.actor("requester")
    site, item = _site(engine, requester.organization_id), _item(engine)
    return {"actor": requester, "site": site, "item": item, "body": _body(site, item)}


def _body(site: int, item: int, quantity: int = 100) -> dict[str, Any]:
    return {"site_id": site, "justification": "ICU surge", "lines": [{"item_id": item, "quantity": quantity}]}


def _post(client: TestClient, actor: Actor, body: dict[str, Any], key: str | None, path: str = "/v1/requests") -> Any:
    headers = actor.headers | ({KEY: key} if key is not None else {})
    return client.post(path, json=body, headers=headers)


def test_ten_retries_create_one_request_and_get_the_same_answer(
    client: TestClient, engine: Engine, hospital: dict[str, Any]
) -> None:
    answers = [_post(client, hospital["actor"], hospital["body"], "retry-1") for _ in range(10)]
    assert [a.status_code for a in answers] == [201] * 10
    first = answers[0]
    assert first.headers["Location"] == f"/v1/requests/{first.json()['id']}"
    for again in answers[1:]:
        assert again.json() == first.json()
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["ETag"] == first.headers["ETag"]
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _count(engine, SupplyRequest) == 1
    assert _count(engine, AuditEvent, AuditEvent.action == "request.create") == 1


def test_without_a_key_every_post_is_a_new_request(
    client: TestClient, engine: Engine, hospital: dict[str, Any]
) -> None:
    for _ in range(2):
        assert _post(client, hospital["actor"], hospital["body"], None).status_code == 201
    assert _count(engine, SupplyRequest) == 2
    assert _rows(engine) == []


def test_twenty_concurrent_retries_have_one_effect(
    client: TestClient, engine: Engine, hospital: dict[str, Any]
) -> None:
    start = threading.Barrier(20)

    def send(_: int) -> Any:
        start.wait()
        return _post(client, hospital["actor"], hospital["body"], "burst-1")

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, range(20)))
    assert _count(engine, SupplyRequest) == 1
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}, statuses
    created = [a for a in answers if a.status_code == 201]
    assert len({a.headers["Location"] for a in created}) == 1 and len({a.text for a in created}) == 1
    assert sum("Idempotent-Replayed" not in a.headers for a in created) == 1  # exactly one ran
    for busy in (a for a in answers if a.status_code == 409):
        assert busy.headers["content-type"].startswith("application/problem+json")
        assert busy.headers["Retry-After"] == "1"
    # Whoever got 409 retries later and receives the stored answer.
    later = _post(client, hospital["actor"], hospital["body"], "burst-1")
    assert later.status_code == 201 and later.text == created[0].text


@pytest.fixture
def slow_first_request(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The first request to authenticate waits (after its reservation, before it holds any database lock —
    SQLite has one write lock) until released: a request still being processed."""
    entered, release = threading.Event(), threading.Event()
    original = keys_service.authenticate

    def waiting(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(keys_service, "authenticate", waiting)
    yield entered, release
    release.set()


def test_a_retry_while_the_first_is_running_gets_409(
    client: TestClient,
    engine: Engine,
    hospital: dict[str, Any],
    slow_first_request: tuple[threading.Event, threading.Event],
) -> None:
    entered, release = slow_first_request
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_post, client, hospital["actor"], hospital["body"], "slow-1")
        assert entered.wait(10)
        busy = _post(client, hospital["actor"], hospital["body"], "slow-1")
        assert busy.status_code == 409, busy.text
        assert busy.json()["field"] == KEY and busy.headers["Retry-After"] == "1"
        release.set()
        assert first.result(10).status_code == 201
    replay = _post(client, hospital["actor"], hospital["body"], "slow-1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert _count(engine, SupplyRequest) == 1


def test_same_key_for_a_different_request_is_422(client: TestClient, engine: Engine, hospital: dict[str, Any]) -> None:
    actor = hospital["actor"]
    assert _post(client, actor, hospital["body"], "k-1").status_code == 201
    other = _body(hospital["site"], hospital["item"], quantity=5)
    for answer in (
        _post(client, actor, other, "k-1"),  # different body
        _post(client, actor, hospital["body"], "k-1", path="/v1/usage-reports"),  # different path
    ):
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.json()["errors"]] == [KEY]
    assert _count(engine, SupplyRequest) == 1 and _count(engine, UsageReport) == 0


def test_the_same_json_written_differently_is_the_same_request(
    client: TestClient, engine: Engine, hospital: dict[str, Any]
) -> None:
    import json

    actor = hospital["actor"]
    assert _post(client, actor, hospital["body"], "k-json").status_code == 201
    reordered = json.dumps(dict(reversed(list(hospital["body"].items()))), indent=2)
    again = client.post(
        "/v1/requests", content=reordered, headers=actor.headers | {KEY: "k-json", "content-type": "application/json"}
    )
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert _count(engine, SupplyRequest) == 1


def test_keys_belong_to_the_api_key_that_sent_them(
    client: TestClient, engine: Engine, factory: Factory, hospital: dict[str, Any]
) -> None:
    other = factory.actor("requester")
    other_site = _site(engine, other.organization_id)
    a = _post(client, hospital["actor"], hospital["body"], "shared-value")
    b = _post(client, other, _body(other_site, hospital["item"]), "shared-value")
    assert a.status_code == b.status_code == 201
    assert "Idempotent-Replayed" not in b.headers and a.headers["Location"] != b.headers["Location"]
    assert b.json()["organization_id"] == other.organization_id
    # Even the very same body from another key runs afresh: it is that key's own first request.
    colleague = factory.actor("requester", organization_id=hospital["actor"].organization_id)
    c = _post(client, colleague, hospital["body"], "shared-value")
    assert c.status_code == 201 and "Idempotent-Replayed" not in c.headers
    assert _count(engine, SupplyRequest) == 3


def test_an_expired_key_runs_again(client: TestClient, engine: Engine, hospital: dict[str, Any]) -> None:
    first = _post(client, hospital["actor"], hospital["body"], "old-1")
    with transaction(engine) as s:
        s.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    again = _post(client, hospital["actor"], hospital["body"], "old-1")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert again.headers["Location"] != first.headers["Location"]
    assert _count(engine, SupplyRequest) == 2
    assert len(_rows(engine)) == 1  # the expired answer was replaced


def test_expired_keys_are_purged(engine: Engine, hospital: dict[str, Any]) -> None:
    key_id = hospital["actor"].key_id
    for key in ("a", "b"):
        idem.reserve(engine, api_key_id=key_id, key=key, fingerprint="f", ttl_s=86400, stale_s=60)
    with transaction(engine) as s:
        s.execute(
            update(IdempotencyKey).where(IdempotencyKey.key == "a").values(created_at=utcnow() - timedelta(days=2))
        )
    assert idem.purge_expired(engine, ttl_s=86400) == 1
    assert [r.key for r in _rows(engine)] == ["b"]


def test_a_client_error_is_stored_and_replayed(client: TestClient, engine: Engine, hospital: dict[str, Any]) -> None:
    actor = hospital["actor"]
    closed = _site(engine, actor.organization_id, active=False)
    body = _body(closed, hospital["item"])
    refused = _post(client, actor, body, "k-4xx")
    assert refused.status_code == 422
    with transaction(engine) as s:  # the world changes: the same request would now succeed…
        s.execute(update(Site).where(Site.id == closed).values(active=True))
    again = _post(client, actor, body, "k-4xx")  # …but a retry is the same request: same answer
    assert again.status_code == 422 and again.json() == refused.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(engine, SupplyRequest) == 0
    assert _post(client, actor, body, "k-4xx-new").status_code == 201  # a new key is a new request


def test_a_server_error_is_not_stored_so_a_retry_runs(
    client: TestClient, engine: Engine, hospital: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = requests_service.create_request
    calls = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return original(*args, **kwargs)

    monkeypatch.setattr(requests_service, "create_request", fails_once)
    failed = _post(client, hospital["actor"], hospital["body"], "k-5xx")
    assert failed.status_code == 500
    assert _rows(engine) == []  # reservation released
    retried = _post(client, hospital["actor"], hospital["body"], "k-5xx")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert _count(engine, SupplyRequest) == 1 and len(calls) == 2


def test_an_abandoned_reservation_is_taken_over(client: TestClient, engine: Engine, hospital: dict[str, Any]) -> None:
    """A process that died mid-request leaves a `processing` row: 409 while fresh, then retry allowed."""
    actor, body = hospital["actor"], hospital["body"]
    import json

    fp = idem.fingerprint("POST", "/v1/requests", "", json.dumps(body).encode())
    assert idem.reserve(engine, api_key_id=actor.key_id, key="k-dead", fingerprint=fp, ttl_s=86400, stale_s=60).action
    assert _post(client, actor, body, "k-dead").status_code == 409
    with transaction(engine) as s:
        s.execute(update(IdempotencyKey).values(locked_at=utcnow() - timedelta(seconds=61)))
    taken = _post(client, actor, body, "k-dead")
    assert taken.status_code == 201 and "Idempotent-Replayed" not in taken.headers
    assert _post(client, actor, body, "k-dead").headers["Idempotent-Replayed"] == "true"
    assert _count(engine, SupplyRequest) == 1


def test_a_revoked_key_gets_401_not_its_stored_answer(
    client: TestClient, factory: Factory, hospital: dict[str, Any]
) -> None:
    actor = hospital["actor"]
    assert _post(client, actor, hospital["body"], "k-rev").status_code == 201
    admin = factory.actor("admin")
    assert client.post(f"/v1/api-keys/{actor.key_id}/revoke", headers=admin.headers).status_code == 200
    assert _post(client, actor, hospital["body"], "k-rev").status_code == 401


def test_actions_are_replayed_too(client: TestClient, engine: Engine, hospital: dict[str, Any]) -> None:
    """Cancelling twice without a key: 409 the second time. With a key, the retry gets the first 200."""
    actor = hospital["actor"]
    url = _post(client, actor, hospital["body"], None).headers["Location"] + "/cancel"
    first = client.post(url, headers=actor.headers | {KEY: "cancel-1"})
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    again = client.post(url, headers=actor.headers | {KEY: "cancel-1"})
    assert again.status_code == 200 and again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert client.post(url, headers=actor.headers).status_code == 409
    assert _count(engine, AuditEvent, AuditEvent.action.like("request.cancel%")) == 1  # type: ignore[attr-defined]


def test_usage_reports_are_idempotent(client: TestClient, engine: Engine, hospital: dict[str, Any]) -> None:
    body = {"item_id": hospital["item"], "on_hand": 40, "daily_usage": 8}
    answers = [_post(client, hospital["actor"], body, "usage-1", path="/v1/usage-reports") for _ in range(3)]
    assert [a.status_code for a in answers] == [201] * 3 and len({a.text for a in answers}) == 1
    assert _count(engine, UsageReport) == 1


@pytest.mark.parametrize("bad", ["", "x" * 256, "naïve", " padded"])
def test_a_malformed_key_is_422(client: TestClient, engine: Engine, hospital: dict[str, Any], bad: str) -> None:
    answer = client.post(
        "/v1/requests", json=hospital["body"], headers=hospital["actor"].headers | {KEY: bad.encode("utf-8")}
    )
    if bad == " padded":  # HTTP strips surrounding whitespace from header values: this is the key "padded"
        assert answer.status_code == 201
        return
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == KEY
    assert _count(engine, SupplyRequest) == 0


def test_api_key_creation_refuses_a_key_because_its_answer_holds_a_secret(
    client: TestClient, engine: Engine, factory: Factory
) -> None:
    admin = factory.actor("admin")
    body = {"name": "ops laptop", "role": "logistics"}
    answer = client.post("/v1/api-keys", json=body, headers=admin.headers | {KEY: "new-key-1"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == KEY
    assert _rows(engine) == []


def test_openapi_documents_the_header_on_every_write(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    writes = [
        (method, path, op)
        for path, ops in paths.items()
        if path.startswith("/v1/")
        for method, op in ops.items()
        if method in {"post", "put", "patch", "delete"}
    ]
    assert writes
    for method, path, op in writes:
        names = [p["name"] for p in op.get("parameters", [])]
        expected = not (method == "post" and path == "/v1/api-keys")
        assert (KEY in names) == expected, f"{method} {path}"
        if expected:
            assert {"409", "422", "429"} <= op["responses"].keys(), f"{method} {path}"
