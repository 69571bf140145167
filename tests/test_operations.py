"""Operations (issue 6 item 5, issue 5 item 8): health checks, Prometheus metrics, JSON request logs,
500s without internals, security headers and CORS."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from app.allocation.models import AllocationRun
from app.config import Settings
from app.db import make_engine, transaction, utcnow
from app.inventory.models import InventoryLot
from app.items.models import Item
from app.main import create_app
from app.operations.logging import json_formatter
from app.sites.models import Site
from tests.factories import Factory
from tests.ops_support import empty_database

PROBLEM = "application/problem+json"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, frozenset(labels.items())))


# ------------------------------------------------------------------------------------ health


def test_healthz_and_readyz_on_a_migrated_database(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_readyz_is_503_until_the_database_is_migrated(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with empty_database(backend, tmp_path, request) as url:
        engine = make_engine(url)
        try:
            client = TestClient(create_app(engine=engine), raise_server_exceptions=False)
            assert client.get("/healthz").status_code == 200  # alive, just not ready
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["detail"] == "database schema is not at the latest migration"
            from app.migrate import upgrade

            upgrade(url)
            assert client.get("/readyz").status_code == 200
        finally:
            engine.dispose()


def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    client = TestClient(create_app(engine=engine), raise_server_exceptions=False)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "database unreachable"
    assert "127.0.0.1" not in response.text and "psycopg" not in response.text
    metrics = client.get("/metrics")  # a scrape still answers, and says the database is down
    assert metrics.status_code == 200
    assert _value(metrics.text, "crisis_database_up") == 0


# ------------------------------------------------------------------------------------ metrics


def test_request_metrics_are_labelled_by_route_template_not_raw_path(client: TestClient, factory: Factory) -> None:
    admin = factory.actor("admin")
    first, second = factory.org(), factory.org()
    for org in (first, second):
        assert client.get(f"/v1/organizations/{org.id}", headers=admin.headers).status_code == 200
    assert client.get("/v1/organizations/987654", headers=admin.headers).status_code == 404
    assert client.get("/no/such/page/123").status_code == 404
    assert client.request("BREW", "/healthz").status_code in (404, 405)

    text = client.get("/metrics").text
    route = "/v1/organizations/{organization_id}"
    assert _value(text, "crisis_http_requests_total", method="GET", route=route, status="200") == 2
    assert _value(text, "crisis_http_requests_total", method="GET", route=route, status="404") == 1
    assert _value(text, "crisis_http_request_duration_seconds_count", method="GET", route=route, status="200") == 2
    assert _value(text, "crisis_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    methods = _label_values(text, "method")
    assert "OTHER" in methods and "BREW" not in methods  # clients cannot invent label values
    assert str(first.id) not in _label_values(text, "route")  # raw ids never become label values


def _label_values(text: str, label: str) -> set[str]:
    return {dict(labels)[label] for (_, labels) in _samples(text) if label in dict(labels)}


def _seed_runs_and_stock(engine: Engine, factory: Factory) -> None:
    depot_org = factory.org(kind="depot_operator")
    now = utcnow()
    with transaction(engine) as session:
        n95 = Item(sku="N95", name="N95 respirator", category="ppe")
        water = Item(sku="WATER", name="Water case", category="food")
        site = Site(organization_id=depot_org.id, name="Depot", kind="depot", lat=41.0, lon=-74.0)
        session.add_all([n95, water, site])
        session.flush()
        session.add_all(
            [
                InventoryLot(site_id=site.id, item_id=n95.id, on_hand=100, reserved=10),
                InventoryLot(site_id=site.id, item_id=n95.id, on_hand=50, reserved=0),
            ]
        )

        def run(status: str, *, ran_s: float | None = None, queued_ago_s: float = 0) -> AllocationRun:
            started = now - timedelta(seconds=600)
            return AllocationRun(
                status=status,
                created_at=now - timedelta(seconds=queued_ago_s),
                started_at=started if ran_s is not None or status == "running" else None,
                finished_at=started + timedelta(seconds=ran_s) if ran_s is not None else None,
            )

        session.add_all(
            [
                run("queued", queued_ago_s=90),
                run("queued", queued_ago_s=10),
                run("running"),
                run("succeeded", ran_s=3),
                run("succeeded", ran_s=45),
                run("failed", ran_s=0.2),
                run("cancelled"),  # cancelled while queued: never ran, so no duration
            ]
        )


def test_database_metrics_queue_depth_run_durations_and_stock(
    client: TestClient, engine: Engine, factory: Factory
) -> None:
    _seed_runs_and_stock(engine, factory)
    text = client.get("/metrics").text

    assert _value(text, "crisis_database_up") == 1
    runs = {s: _value(text, "crisis_allocation_runs", status=s) for s in ("queued", "running", "succeeded", "failed")}
    assert runs == {"queued": 2, "running": 1, "succeeded": 2, "failed": 1}
    assert 85 <= (_value(text, "crisis_allocation_queue_oldest_age_seconds") or 0) <= 150

    duration = "crisis_allocation_run_duration_seconds"
    assert _value(text, duration + "_count", outcome="succeeded") == 2
    assert _value(text, duration + "_sum", outcome="succeeded") == pytest.approx(48, abs=0.01)
    assert _value(text, duration + "_bucket", outcome="succeeded", le="2.0") == 0
    assert _value(text, duration + "_bucket", outcome="succeeded", le="5.0") == 1
    assert _value(text, duration + "_bucket", outcome="succeeded", le="60.0") == 2
    assert _value(text, duration + "_bucket", outcome="failed", le="0.5") == 1
    assert _value(text, duration + "_count", outcome="cancelled") == 0

    assert _value(text, "crisis_stock_on_hand_units", sku="N95") == 150
    assert _value(text, "crisis_stock_reserved_units", sku="N95") == 10
    assert _value(text, "crisis_stock_on_hand_units", sku="WATER") == 0  # in the catalog, out of stock


def test_metrics_token_when_configured(engine: Engine) -> None:
    app = create_app(engine=engine, settings=Settings(metrics_token="scrape-me"))  # type: ignore[arg-type]
    client = TestClient(app, raise_server_exceptions=False)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-me"}):
        denied = client.get("/metrics", headers=headers)
        assert denied.status_code == 401
        assert denied.headers["content-type"] == PROBLEM and "crisis_" not in denied.text
    allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert allowed.status_code == 200 and "crisis_http_requests_total" in allowed.text
    assert client.get("/healthz").status_code == 200  # health checks stay open


def test_an_empty_metrics_token_means_no_token(engine: Engine) -> None:
    app = create_app(engine=engine, settings=Settings(metrics_token=""))  # type: ignore[arg-type]
    assert TestClient(app).get("/metrics").status_code == 200


# ------------------------------------------------------------------------------------ logs


def test_one_json_line_per_request_with_request_id_and_principal_never_the_key(
    client: TestClient, factory: Factory
) -> None:
    logistics = factory.actor("logistics")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        client.get("/v1/items?limit=5", headers={**logistics.headers, "X-Request-ID": "trace-abc-1"})
        client.get("/v1/items", headers={"Authorization": "Bearer cs_not_a_real_key_but_secret_looking"})
        client.post("/v1/organizations", headers=logistics.headers, json={"name": "Secret Clinic Name", "kind": "x"})
    finally:
        root.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is one JSON object
    # What the server logged (the test's own HTTP client, httpx, logs its URLs too).
    output = "\n".join(json.dumps(line) for line in lines if line.get("logger") != "httpx")
    requests = [line for line in lines if line.get("logger") == "app.access"]
    assert len(requests) == 3
    first = requests[0]
    assert first["event"] == "request" and first["request_id"] == "trace-abc-1"
    assert {k: first[k] for k in ("method", "path", "route", "status", "key_id", "role")} == {
        "method": "GET",
        "path": "/v1/items",
        "route": "/v1/items",
        "status": 200,
        "key_id": logistics.key_id,
        "role": "logistics",
    }
    assert isinstance(first["duration_ms"], float) and first["level"] == "info" and "ts" in first
    assert requests[1]["status"] == 401 and "key_id" not in requests[1]
    assert requests[2]["status"] in (403, 422)
    # Never the secret, the Authorization header, the query string or a request body.
    assert logistics.key not in output and "cs_not_a_real_key" not in output
    assert "authorization" not in output.lower() and "limit=5" not in output and "Secret Clinic" not in output


# ------------------------------------------------------------------------------------ errors


def test_an_unexpected_error_is_a_generic_500_without_stack_trace_or_sql(
    client: TestClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.items import service

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OperationalError(
            "SELECT key_hash FROM api_keys WHERE prefix = 'cs_leak'", {}, RuntimeError("disk I/O error at /var/db")
        )

    monkeypatch.setattr(service, "list_items", broken)
    response = client.get("/v1/items", headers={**factory.actor("logistics").headers, "X-Request-ID": "rid-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 500 and body["title"] == "Internal error" and body["request_id"] == "rid-500"
    for leak in ("SELECT", "api_keys", "key_hash", "Traceback", "OperationalError", "disk I/O", "/var/db", ".py"):
        assert leak not in response.text
    # The response still carries the request id to quote and the security headers.
    assert response.headers["x-request-id"] == "rid-500"
    assert response.headers["x-content-type-options"] == "nosniff"
    metrics = client.get("/metrics").text
    assert _value(metrics, "crisis_http_requests_total", method="GET", route="/v1/items", status="500") == 1


# ------------------------------------------------------------------------------------ headers


def test_security_headers_on_every_response(client: TestClient, factory: Factory) -> None:
    logistics = factory.actor("logistics")
    for path, headers in (("/v1/items", logistics.headers), ("/v1/items", {}), ("/healthz", {}), ("/nowhere", {})):
        response = client.get(path, headers=headers)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in _script(csp)
    assert client.get("/v1/items", headers=logistics.headers).headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/healthz").headers


def _script(csp: str) -> str:
    return next((d for d in csp.split(";") if d.strip().startswith("script-src")), "")


def test_docs_pages_work_under_their_content_security_policy(client: TestClient) -> None:
    """/docs loads Swagger UI from a CDN and starts it inline: its CSP must allow exactly that."""
    page = client.get("/docs")
    assert page.status_code == 200
    csp = _directives(page.headers["content-security-policy"])
    for tag, attribute, directive in (("script", "src", "script-src"), ("link", "href", "style-src")):
        for url in re.findall(rf'<{tag}[^>]*\b{attribute}="(https://[^"]+)"', page.text):
            if tag == "link" and "stylesheet" not in url and not url.endswith(".css"):
                directive = "img-src"  # the favicon link
            origin = "/".join(url.split("/")[:3])
            assert origin in csp[directive], f"{url} blocked by {directive}"
    assert "<script>" in page.text and "'unsafe-inline'" in csp["script-src"]
    assert "https:" not in client.get("/v1/items").headers["content-security-policy"]  # only the docs relax it


def _directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_a_route_that_sets_its_own_cache_control_keeps_it() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from app.operations.middleware import SecurityHeadersMiddleware

    def cached(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"Cache-Control": "max-age=60"})

    inner = Starlette(routes=[Route("/v1/cached", cached)])
    client = TestClient(SecurityHeadersMiddleware(inner, docs_paths=("/docs",)))
    assert client.get("/v1/cached").headers["cache-control"] == "max-age=60"


# ------------------------------------------------------------------------------------ CORS


def _preflight(client: TestClient, origin: str) -> object:
    return client.options(
        "/v1/items",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_cors_is_off_unless_configured(client: TestClient, factory: Factory) -> None:
    preflight = _preflight(client, "https://evil.example")
    assert "access-control-allow-origin" not in preflight.headers  # type: ignore[attr-defined]
    got = client.get("/v1/items", headers={**factory.actor("logistics").headers, "Origin": "https://evil.example"})
    assert got.status_code == 200 and "access-control-allow-origin" not in got.headers


def test_cors_allows_only_the_configured_origins(engine: Engine, factory: Factory) -> None:
    settings = Settings(cors_origins="https://dashboard.example.org, https://ops.example.org")
    client = TestClient(create_app(engine=engine, settings=settings), raise_server_exceptions=False)
    allowed = _preflight(client, "https://ops.example.org")
    assert allowed.status_code == 200  # type: ignore[attr-defined]
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example.org"  # type: ignore[attr-defined]
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()  # type: ignore[attr-defined]
    denied = _preflight(client, "https://evil.example")
    assert "access-control-allow-origin" not in denied.headers  # type: ignore[attr-defined]
    got = client.get(
        "/v1/items", headers={**factory.actor("logistics").headers, "Origin": "https://dashboard.example.org"}
    )
    assert got.headers["access-control-allow-origin"] == "https://dashboard.example.org"
    assert "x-request-id" in got.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-credentials" not in got.headers
