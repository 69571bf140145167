"""The dashboard over HTTP (no browser): sign-in, the session cookie, CSRF, role limits, forms and the
main flow through the services — on SQLite and PostgreSQL. The browser tests (tests/browser) drive
the same pages in Chromium."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.allocation.worker import run_worker
from app.config import Settings
from app.dashboard.session import COOKIE_NAME
from app.main import create_app
from tests.conftest import Actor

SECRET = "test-session-secret-" + "x" * 40
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ETAG = re.compile(r'name="etag" value="([^"]+)"')


@pytest.fixture
def app_client(engine: Engine) -> Iterator[TestClient]:
    settings = Settings(session_secret=SECRET, embedded_worker="off")
    with TestClient(create_app(engine=engine, settings=settings), follow_redirects=False) as c:
        yield c


def csrf(client: TestClient, path: str = "/login") -> str:
    match = CSRF.search(client.get(path, follow_redirects=True).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: TestClient, actor: Actor) -> Any:
    response = client.post("/login", data={"api_key": actor.key, "csrf_token": csrf(client), "next": ""})
    assert response.status_code == 303, response.text
    return response


def post(client: TestClient, path: str, data: dict[str, Any], page: str | None = None) -> Any:
    return client.post(path, data={"csrf_token": csrf(client, page or "/"), **data})


def flashes(client: TestClient, path: str) -> str:
    return " ".join(re.findall(r'<p class="flash flash-\w+"[^>]*>(.*?)</p>', client.get(path).text))


def assert_csp_clean(html: str) -> None:
    """Scripts and styles only from files: the Content-Security-Policy allows no inline code."""
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script>"
    assert " style=" not in html and "<style" not in html, "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def test_pages_send_anonymous_visitors_to_sign_in(app_client: TestClient) -> None:
    response = app_client.get("/gaps")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/gaps"
    assert app_client.get("/").headers["location"] == "/login"
    assert app_client.get("/runs/1/progress.json").status_code == 303


def test_sign_in_keeps_the_key_out_of_the_cookie(app_client: TestClient, demo: dict[str, Actor]) -> None:
    response = sign_in(app_client, demo["logistics"])
    assert response.headers["location"] == "/gaps"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(COOKIE_NAME + "=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert demo["logistics"].key not in cookie
    page = app_client.get("/gaps")
    assert page.status_code == 200 and "Gap analysis" in page.text and "N95" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "demo logistics" in page.text  # the header names who is signed in
    for path in ("/gaps", "/map", "/runs", "/shipments"):
        assert_csp_clean(app_client.get(path).text)


def test_login_refuses_forms_without_the_token_and_unknown_keys(app_client: TestClient, demo: dict[str, Actor]) -> None:
    response = app_client.post("/login", data={"api_key": demo["logistics"].key})
    assert response.status_code == 403
    assert app_client.get("/gaps").status_code == 303  # not signed in
    response = app_client.post("/login", data={"api_key": "cs_wrong", "csrf_token": csrf(app_client)})
    assert response.status_code == 401
    assert "unknown or has been revoked" in response.text


def test_sign_in_never_redirects_off_site(app_client: TestClient, demo: dict[str, Actor]) -> None:
    for target, expected in (("//evil.example/x", "/gaps"), ("https://evil.example", "/gaps"), ("/map", "/map")):
        app_client.cookies.clear()
        data = {"api_key": demo["logistics"].key, "csrf_token": csrf(app_client), "next": target}
        assert app_client.post("/login", data=data).headers["location"] == expected


def test_revoked_key_is_signed_out_on_its_next_page(app_client: TestClient, demo: dict[str, Actor]) -> None:
    sign_in(app_client, demo["logistics"])
    assert app_client.get("/gaps").status_code == 200
    revoke = app_client.post(f"/v1/api-keys/{demo['logistics'].key_id}/revoke", headers=demo["admin"].headers)
    assert revoke.status_code == 200
    response = app_client.get("/gaps")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_sign_out_ends_the_session(app_client: TestClient, demo: dict[str, Actor]) -> None:
    sign_in(app_client, demo["donor"])
    assert post(app_client, "/logout", {}, "/pledges").headers["location"] == "/login"
    assert app_client.get("/pledges").status_code == 303


@pytest.mark.parametrize(
    ("label", "allowed", "denied"),
    [
        ("requester", ["/requests", "/requests/new", "/usage"], ["/gaps", "/runs", "/shipments", "/pledges", "/admin"]),
        ("donor", ["/pledges"], ["/requests", "/driver", "/map", "/admin"]),
        ("driver", ["/driver"], ["/requests", "/pledges", "/shipments", "/gaps"]),
        ("admin", ["/admin", "/gaps", "/map", "/runs", "/shipments"], ["/requests", "/driver", "/pledges"]),
        ("logistics", ["/gaps", "/map", "/runs", "/shipments"], ["/admin", "/requests", "/driver"]),
    ],
)
def test_each_role_sees_its_pages_only(
    app_client: TestClient, demo: dict[str, Actor], label: str, allowed: list[str], denied: list[str]
) -> None:
    sign_in(app_client, demo[label])
    for path in allowed:
        page = app_client.get(path)
        assert page.status_code == 200, path
        assert_csp_clean(page.text)
    for path in denied:
        assert app_client.get(path).status_code == 403, path


def test_admin_reads_runs_but_cannot_trigger_one(app_client: TestClient, demo: dict[str, Actor]) -> None:
    sign_in(app_client, demo["admin"])
    assert "Trigger run" not in app_client.get("/runs").text
    assert post(app_client, "/runs", {}, "/runs").status_code == 403
    runs = app_client.get("/v1/allocation-runs", headers=demo["admin"].headers).json()
    assert runs["items"] == []
    admin_page = app_client.get("/admin").text
    assert demo["logistics"].key not in admin_page and demo["logistics"].key[:10] in admin_page  # prefix only


def test_request_form_shows_field_errors_then_creates(
    app_client: TestClient, demo: dict[str, Actor], engine: Engine
) -> None:
    requester = demo["requester"]
    sign_in(app_client, requester)
    form = app_client.get("/requests/new").text
    site_id = re.search(r'name="site_id"[^>]*>\s*<option value="(\d+)"', form).group(1)  # type: ignore[union-attr]
    item_id = re.search(
        r'name="lines\[0\]\.item_id"[^>]*>\s*<option value="">[^<]*</option>\s*<option value="(\d+)"', form
    )
    assert item_id
    line = {"lines[0].item_id": item_id.group(1), "lines[0].priority": "critical"}

    bad = post(app_client, "/requests/new", {"site_id": site_id, **line, "lines[0].quantity": "-5"}, "/requests/new")
    assert bad.status_code == 422
    assert 'id="f-lines-0-quantity-error">Input should be greater than 0<' in bad.text
    assert 'value="-5"' in bad.text  # what the person typed stays in the field

    foreign = demo["requester-2"]
    other_site = app_client.get("/v1/sites", headers=foreign.headers).json()["items"][0]["id"]
    wrong = post(
        app_client, "/requests/new", {"site_id": other_site, **line, "lines[0].quantity": "10"}, "/requests/new"
    )
    assert wrong.status_code == 422 and 'id="f-site_id-error"' in wrong.text

    ok = post(
        app_client,
        "/requests/new",
        {"site_id": site_id, **line, "lines[0].quantity": "12", "lines[0].needed_by": "2099-01-02T08:30"},
        "/requests/new",
    )
    assert ok.status_code == 303
    created = app_client.get("/v1/requests?limit=500", headers=requester.headers).json()["items"][-1]
    assert created["lines"][0]["quantity"] == 12 and created["lines"][0]["priority"] == "critical"
    assert created["lines"][0]["needed_by"].startswith("2099-01-02T08:30:00")  # read as UTC
    assert f"Request {created['id']} submitted" in flashes(app_client, "/requests")


def test_usage_and_pledge_forms(app_client: TestClient, demo: dict[str, Actor]) -> None:
    sign_in(app_client, demo["requester"])
    bad = post(app_client, "/usage", {"item_id": "", "on_hand": "5"}, "/usage")
    assert bad.status_code == 422 and 'id="f-item_id-error"' in bad.text
    item = app_client.get("/v1/items", headers=demo["requester"].headers).json()["items"][0]["id"]
    assert (
        post(app_client, "/usage", {"item_id": item, "on_hand": "40", "daily_usage": "8"}, "/usage").status_code == 303
    )
    assert "5.0" in app_client.get("/usage").text  # 40 on hand ÷ 8 a day

    app_client.cookies.clear()
    sign_in(app_client, demo["donor"])
    bad = post(app_client, "/pledges", {"item_id": item, "quantity": "0"}, "/pledges")
    assert bad.status_code == 422 and 'id="f-quantity-error"' in bad.text
    site = re.search(r'name="site_id"[^>]*>\s*<option value="(\d+)"', bad.text).group(1)  # type: ignore[union-attr]
    assert (
        post(app_client, "/pledges", {"item_id": item, "site_id": site, "quantity": "75"}, "/pledges").status_code
        == 303
    )
    pledges = app_client.get("/v1/pledges?limit=500", headers=demo["donor"].headers).json()["items"]
    assert pledges[-1]["quantity"] == 75 and pledges[-1]["status"] == "pledged"


def test_logistics_to_driver_flow(app_client: TestClient, demo: dict[str, Actor], engine: Engine) -> None:
    logistics, driver = demo["logistics"], demo["driver"]
    sign_in(app_client, logistics)
    response = post(app_client, "/runs", {"time_limit_s": "30"}, "/runs")
    assert response.status_code == 303
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    assert app_client.get(f"/runs/{run_id}/progress.json").json()["status"] == "queued"
    again = post(app_client, "/runs", {}, "/runs")  # overlaps the queued run
    assert again.status_code == 409 and f"overlaps allocation run {run_id}" in again.text

    assert run_worker(engine, worker_id="dashboard-test", once=True) == 1
    progress = app_client.get(f"/runs/{run_id}/progress.json").json()
    assert progress["status"] == "succeeded" and progress["finished"] and progress["plan_url"] == f"/runs/{run_id}/plan"

    page = app_client.get(f"/runs/{run_id}/plan")
    assert page.status_code == 200 and "Units filled by tier" in page.text and "Greedy baseline" in page.text
    etag = html.unescape(ETAG.search(page.text).group(1))  # type: ignore[union-attr]
    line_id = int(re.search(r'<tr id="line-(\d+)">', page.text).group(1))  # type: ignore[union-attr]

    # Without the version the page was drawn with, or with a stale one, nothing changes.
    post(app_client, f"/runs/{run_id}/plan/approve", {}, "/runs")
    assert "If-Match header required" in flashes(app_client, "/runs")
    post(app_client, f"/runs/{run_id}/plan/lines/{line_id}", {"quantity": "1", "etag": '"v999-a0"'}, "/runs")
    assert "changed since you loaded" in flashes(app_client, "/runs")
    plan = app_client.get(f"/v1/allocation-runs/{run_id}/plan", headers=logistics.headers).json()
    assert plan["state"] == "proposed" and not plan["edited"]

    post(app_client, f"/runs/{run_id}/plan/lines/{line_id}", {"quantity": "1", "etag": etag}, "/runs")
    plan = app_client.get(f"/v1/allocation-runs/{run_id}/plan", headers=logistics.headers).json()
    assert plan["edited"] and next(ln for ln in plan["lines"] if ln["id"] == line_id)["quantity"] == 1
    etag = html.unescape(ETAG.search(app_client.get(f"/runs/{run_id}/plan").text).group(1))  # type: ignore[union-attr]
    approved = post(app_client, f"/runs/{run_id}/plan/approve", {"etag": etag}, "/runs")
    assert approved.headers["location"] == "/shipments"
    plan = app_client.get(f"/v1/allocation-runs/{run_id}/plan", headers=logistics.headers).json()
    assert plan["state"] == "approved" and plan["shipment_ids"]

    sid = plan["shipment_ids"][0]
    shipment = app_client.get(f"/v1/shipments/{sid}", headers=logistics.headers).json()
    post(app_client, f"/shipments/{sid}/assign", {"driver_key_id": driver.key_id, "version": shipment["version"]})
    shipment = app_client.get(f"/v1/shipments/{sid}", headers=logistics.headers).json()
    assert shipment["driver_key_id"] == driver.key_id
    assert f'data-testid="shipment-{sid}"' in app_client.get("/shipments").text

    app_client.cookies.clear()
    sign_in(app_client, driver)
    board = app_client.get("/driver").text
    assert f'data-testid="shipment-{sid}"' in board and "Mark dispatched" in board and "Mark cancelled" not in board
    post(app_client, f"/driver/shipments/{sid}/events", {"status": "dispatched", "version": shipment["version"]})
    assert app_client.get(f"/v1/shipments/{sid}", headers=driver.headers).json()["status"] == "dispatched"

    line = shipment["lines"][0]
    short = {"status": "delivered", "line_id": line["id"], f"received[{line['id']}]": line["quantity"] - 1}
    post(app_client, f"/driver/shipments/{sid}/events", short)
    assert "units short: give a reason" in flashes(app_client, "/driver")  # a shortfall needs its reason
    assert app_client.get(f"/v1/shipments/{sid}", headers=driver.headers).json()["status"] == "dispatched"
    post(
        app_client,
        f"/driver/shipments/{sid}/events",
        short | {f"shortfall[{line['id']}]": "damaged", "received_by": "Dock B"},
    )
    done = app_client.get(f"/v1/shipments/{sid}", headers=driver.headers).json()
    assert done["status"] == "delivered" and done["received_by"] == "Dock B"
    assert done["lines"][0]["quantity_received"] == line["quantity"] - 1
    assert done["lines"][0]["shortfall_reason"] == "damaged"


def test_static_assets_and_nothing_else(app_client: TestClient) -> None:
    js = app_client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert app_client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert app_client.get("/static/..%2Fsession.py").status_code == 404
    assert app_client.get("/static/missing.js").status_code == 404


def test_dashboard_routes_stay_out_of_the_api_schema(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not any(p in paths for p in ("/", "/login", "/gaps", "/runs/{run_id}/plan"))
