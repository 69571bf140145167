"""Object-level authorization (issue 5, item 4): every endpoint that takes an id, called by every
organisation-bound principal with the id of an object it may not see, answers 404 — or 403 where the
role may not use the action at all (tests/authz_table.py) — for every method, and changes nothing; and
no list ever contains a row its caller may not see. The world: tests/authz_world.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.deps import declared_roles, iter_api_routes
from tests import authz_world
from tests.authz_table import EXPECTED
from tests.authz_world import ORG_BOUND, Coalition, db_state, ownership, visible
from tests.conftest import Actor
from tests.factories import Factory

# Path parameters → the kind of object they name. A new route with an unknown parameter fails the
# test until it is classified here (so no id-taking endpoint escapes the sweep).
PARAM_KINDS: dict[tuple[str, ...], str] = {
    ("organization_id",): "organization",
    ("site_id",): "site",
    ("item_id",): "item",
    ("lot_id",): "lot",
    ("movement_id",): "movement",
    ("request_id",): "request",
    ("request_id", "line_id"): "request_line",
    ("pledge_id",): "pledge",
    ("report_id",): "usage_report",
    ("key_id",): "api_key",
    ("run_id",): "run",
    ("run_id", "line_id"): "plan_line",
    ("shipment_id",): "shipment",
    ("kind",): "export_kind",
    ("report",): "export_report",
}
# FHIR reads take ids too (request line ids and shipment line ids).
FHIR_ROUTES = {
    "GET /fhir/R4/SupplyRequest/{resource_id}": "fhir_request",
    "GET /fhir/R4/SupplyDelivery/{resource_id}": "delivery_line",
}

# Kinds whose objects belong to an organisation (or, for shipments, to their parties and driver).
OWNED = frozenset(
    {"organization", "site", "request", "request_line", "pledge", "usage_report", "api_key", "shipment"}
    | {"fhir_request", "delivery_line"}
)

MISSING = 987654

Body = dict[str, Any] | Callable[[Coalition, Any], dict[str, Any]]


def _next_status(w: Coalition, sid: int) -> dict[str, Any]:
    """A transition the shipment could really take now: if visibility failed, it would succeed."""
    status = _cached_get(w, f"/v1/shipments/{sid}").json()["status"]
    return {"status": {"planned": "dispatched", "dispatched": "in_transit"}.get(status, "delivered")}


BODIES: dict[str, Body] = {
    "PATCH /v1/organizations/{organization_id}": {"name": "taken over", "equity_weight": 9.5},
    "PUT /v1/organizations/{organization_id}/equity-weight": {"equity_weight": 9.5},
    "PATCH /v1/sites/{site_id}": {"name": "taken over"},
    "PATCH /v1/items/{item_id}": {"name": "taken over"},
    "PATCH /v1/requests/{request_id}": {"justification": "taken over"},
    "PATCH /v1/requests/{request_id}/lines/{line_id}": {"quantity": 1},
    "POST /v1/pledges/{pledge_id}/receive": lambda w, _: {"depot_site_id": w.sites["depot"], "quantity": 1},
    "PATCH /v1/allocation-runs/{run_id}/plan/lines/{line_id}": {"quantity": 1},
    "POST /v1/shipments/{shipment_id}/events": _next_status,
    "POST /v1/shipments/{shipment_id}/assign": lambda w, _: {"driver_key_id": w.actors["V1"].key_id},
}
NO_BODY = re.compile(
    r"/(leave|join|deactivate|activate|cancel|confirm|revoke|approve|reject)$|/plan/lines/\{line_id\}$"
)


def _routes() -> list[tuple[str, str, str, frozenset[str]]]:
    """(method, path, kind, roles) for every route that takes a path parameter."""
    from app.db import make_engine
    from app.main import create_app

    app = create_app(engine=make_engine("sqlite://"))
    out = []
    for route in iter_api_routes(app.routes):
        assert isinstance(route, APIRoute)
        params = tuple(re.findall(r"\{(\w+)(?::\w+)?\}", route.path))
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            key = f"{method} {route.path}"
            roles = EXPECTED.get(key) or declared_roles(route) or frozenset()
            if key in FHIR_ROUTES:
                out.append((method, route.path, FHIR_ROUTES[key], roles))
            elif route.path.startswith("/v1") and params:
                assert params in PARAM_KINDS, f"classify the path parameters of {key} in PARAM_KINDS"
                out.append((method, route.path, PARAM_KINDS[params], roles))
    return out


ROUTES = _routes()


def _url(path: str, kind: str, key: Any) -> str:
    if kind == "request_line":
        return path.format(request_id=key[0], line_id=key[1])
    if kind == "plan_line":
        return path.format(run_id=key[0], line_id=key[1])
    if kind == "fhir_request":
        return path.format(resource_id=key[1])
    name = re.findall(r"\{(\w+)", path)[0]
    return path.replace(f"{{{name}}}", str(key))


def _cached_get(w: Coalition, url: str) -> Any:
    """Reads by admin, cached while nothing changes (the sweep asserts that nothing does)."""
    if url not in w.reads:
        w.reads[url] = w.client.get(url, headers=w.h("admin"))
        assert w.reads[url].status_code == 200, w.reads[url].text
    return w.reads[url]


def _etag(w: Coalition, kind: str, key: Any) -> str | None:
    """The object's real current ETag: even a correct precondition must not open a foreign object."""
    url = {
        "organization": "/v1/organizations/{}",
        "site": "/v1/sites/{}",
        "request": "/v1/requests/{}",
        "request_line": "/v1/requests/{}",
        "pledge": "/v1/pledges/{}",
        "shipment": "/v1/shipments/{}",
    }.get(kind)
    if url is None:
        return None
    return _cached_get(w, url.format(key[0] if kind == "request_line" else key)).headers["ETag"]


def _keys(owners: dict[str, dict[Any, Any]], kind: str) -> list[Any]:
    if kind == "fhir_request":
        return sorted(owners["request_line"])
    return sorted(owners[kind])


def _foreign(actor: Actor, kind: str, owners: dict[str, dict[Any, Any]]) -> list[Any]:
    base = "request_line" if kind == "fhir_request" else kind
    out = [k for k in _keys(owners, kind) if not visible(actor, base, k, owners)]
    if kind == "request_line" and actor.role == "requester":
        # the caller's own request with another organisation's line
        own = [r for r, org in owners["request"].items() if org == actor.organization_id]
        out += [(r, line) for r in own for (_, line) in out if (r, line) not in owners["request_line"]]
    return out


def _shape(problem: dict[str, Any]) -> tuple[Any, ...]:
    return problem["type"], problem["title"], problem["status"], sorted(problem)


def _body(method: str, path: str, w: Coalition, key: Any) -> dict[str, Any] | None:
    spec = BODIES.get(f"{method} {path}")
    if spec is None:
        assert method in ("GET", "DELETE") or NO_BODY.search(path), f"give {method} {path} a plausible body"
        return None
    return spec(w, key) if callable(spec) else spec


@pytest.fixture
def world(client: TestClient, engine: Engine, factory: Factory) -> Coalition:
    return authz_world.build(client, engine, factory)


def test_foreign_ids_are_404_and_change_nothing(world: Coalition, engine: Engine) -> None:
    w, c = world, world.client
    owners = ownership(engine)
    failures: list[str] = []
    checked_404: dict[str, int] = {}
    for method, path, kind, roles in ROUTES:
        before = db_state(engine)
        for name in ORG_BOUND:
            actor = w.actors[name]
            allowed = actor.role in roles
            # A role without the right: 403 whatever the id (its own objects included).
            keys = _foreign(actor, kind, owners) if allowed else _keys(owners, kind)[:1]
            for key in keys:
                url = _url(path, kind, key)
                headers = dict(actor.headers)
                etag = _etag(w, kind, key) if allowed and method != "GET" else None
                if etag:
                    headers["If-Match"] = etag
                r = c.request(method, url, json=_body(method, path, w, key), headers=headers)
                want = 404 if allowed else 403
                if r.status_code != want:
                    failures.append(
                        f"{name} ({actor.role}) {method} {url} -> {r.status_code}, want {want}: {r.text[:200]}"
                    )
                elif path.startswith("/v1"):
                    assert r.headers["content-type"].startswith("application/problem+json"), r.text
                if allowed and r.status_code == 404 and path.startswith("/v1"):
                    # exactly what a missing id gets: not even the shape of the answer hints the object exists
                    missing = c.request(
                        method, re.sub(r"/\d+", f"/{MISSING}", url), json=_body(method, path, w, key), headers=headers
                    )
                    assert missing.status_code == 404, missing.text
                    assert _shape(r.json()) == _shape(missing.json()), (r.text, missing.text)
                if allowed:
                    checked_404[f"{method} {path}"] = checked_404.get(f"{method} {path}", 0) + 1
                    if method == "GET":  # control: the id is real (admin reads it)
                        assert c.get(url, headers=w.h("admin")).status_code == 200, url
        if db_state(engine) != before:
            failures.append(f"{method} {path} changed the database for a foreign caller")
    assert failures == []
    # Every id-taking route that an organisation-bound role may use was probed with foreign ids.
    for method, path, kind, roles in ROUTES:
        if kind in OWNED and roles & {"requester", "donor", "driver"}:
            assert checked_404.get(f"{method} {path}", 0) > 0, f"{method} {path} was never probed with a foreign id"


def test_owners_reach_the_same_routes(world: Coalition, engine: Engine) -> None:
    """Control for the sweep above: the owner of each object gets past the 404 (the ids are real)."""
    w, c = world, world.client
    owners = ownership(engine)
    for method, path, kind, roles in ROUTES:
        for name in ORG_BOUND:
            actor = w.actors[name]
            if actor.role not in roles:
                continue
            base = "request_line" if kind == "fhir_request" else kind
            mine = [k for k in _keys(owners, kind) if visible(actor, base, k, owners)]
            if not mine or kind not in OWNED:
                continue
            key = mine[0]
            w.reads.clear()  # the owners' own writes change things
            headers = dict(actor.headers)
            etag = _etag(w, kind, key) if method != "GET" else None
            if etag:
                headers["If-Match"] = etag
            r = c.request(method, _url(path, kind, key), json=_body(method, path, w, key), headers=headers)
            assert r.status_code not in (401, 403, 404), f"{name} {method} {path} on its own {key}: {r.text}"


# ---------------------------------------------------------------- lists

# list path → the kind of its rows; None: no organisation-bound role may list it.
LISTS: dict[str, str | None] = {
    "/v1/organizations": "organization",
    "/v1/sites": "site",
    "/v1/items": "item",
    "/v1/requests": "request",
    "/v1/usage-reports": "usage_report",
    "/v1/pledges": "pledge",
    "/v1/api-keys": "api_key",
    "/v1/shipments": "shipment",
    "/v1/inventory/lots": None,
    "/v1/inventory/movements": None,
    "/v1/allocation-runs": None,
    "/v1/audit-events": None,
}
REPORTS = ("/v1/reports/gap", "/v1/reports/days-of-supply", "/v1/reports/request-ageing", "/v1/reports/donor-impact")


def _page_through(c: TestClient, url: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(500):
        r = c.get(url, params=params | {"limit": 2} | ({"cursor": cursor} if cursor else {}), headers=headers)
        assert r.status_code == 200, r.text
        rows += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError(f"{url} never ended")


def test_every_list_route_is_classified() -> None:
    from app.db import make_engine
    from app.main import create_app

    app = create_app(engine=make_engine("sqlite://"))
    for route in iter_api_routes(app.routes):
        if route.path.startswith("/v1") and "GET" in route.methods and "{" not in route.path:  # type: ignore[attr-defined]
            assert route.path in LISTS or route.path in REPORTS, f"classify the list {route.path}"  # type: ignore[attr-defined]


def test_lists_never_contain_a_foreign_row(world: Coalition, engine: Engine) -> None:
    w, c = world, world.client
    owners = ownership(engine)
    for name in ORG_BOUND:
        actor = w.actors[name]
        for path, kind in LISTS.items():
            roles = EXPECTED.get(f"GET {path}", frozenset())
            if actor.role not in roles:
                assert c.get(path, headers=actor.headers).status_code == 403, (name, path)
                continue
            assert kind is not None
            rows = _page_through(c, path, actor.headers)
            got = [row["id"] for row in rows]
            want = [k for k in _keys(owners, kind) if visible(actor, kind, k, owners)]
            assert sorted(got) == want, f"{name} lists {path}: {got}, may see exactly {want}"
            if kind == "request":  # and the lines inside are the request's own
                for row in rows:
                    assert all(line["request_id"] == row["id"] for line in row["lines"])
            if kind == "shipment":
                for row in rows:
                    events = _page_through(c, f"/v1/shipments/{row['id']}/events", actor.headers)
                    assert events and {e["shipment_id"] for e in events} == {row["id"]}
        _check_feed(c, actor, owners)
        _check_filters_cannot_widen(w, actor, owners)
        _check_reports(c, actor)
        _check_fhir_searches(c, actor, owners)


def _check_feed(c: TestClient, actor: Actor, owners: dict[str, dict[Any, Any]]) -> None:
    seen: list[int] = []
    cursor = "0"
    while True:
        page = c.get("/v1/shipments", params={"updated_since": cursor, "limit": 1}, headers=actor.headers).json()
        seen += [row["id"] for row in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(set(seen)) == [k for k in sorted(owners["shipment"]) if visible(actor, "shipment", k, owners)]


def _check_filters_cannot_widen(w: Coalition, actor: Actor, owners: dict[str, dict[Any, Any]]) -> None:
    """Asking for another organisation's rows by filter gives nothing, never their rows."""
    foreign_orgs = [o for o in owners["organization"] if o != actor.organization_id]
    for path in ("/v1/requests", "/v1/usage-reports", "/v1/pledges", "/v1/api-keys", "/v1/sites"):
        if actor.role not in EXPECTED[f"GET {path}"]:
            continue
        for org in foreign_orgs:
            rows = _page_through(w.client, path, actor.headers, organization_id=org)
            kind = {"/v1/requests": "request", "/v1/usage-reports": "usage_report", "/v1/pledges": "pledge"}
            kind |= {"/v1/api-keys": "api_key", "/v1/sites": "site"}
            assert all(visible(actor, kind[path], row["id"], owners) for row in rows), (path, org, rows)
    for site in w.sites.values():
        rows = _page_through(w.client, "/v1/shipments", actor.headers, destination_site_id=site)
        assert all(visible(actor, "shipment", row["id"], owners) for row in rows)


def _check_reports(c: TestClient, actor: Actor) -> None:
    """Reports with per-organisation rows show the caller's organisation only."""
    for path in REPORTS:
        if actor.role not in EXPECTED.get(f"GET {path}", {"admin", "logistics", "requester", "donor"}):
            continue
        params = {"group_by": "organization"} if path.endswith("request-ageing") else {}
        r = c.get(path, params=params, headers=actor.headers)
        if r.status_code == 403:
            continue
        assert r.status_code == 200, r.text
        orgs = {row.get("organization_id", actor.organization_id) for row in r.json()["items"]}
        assert orgs <= {actor.organization_id, None}, (actor.role, path, orgs)


def _check_fhir_searches(c: TestClient, actor: Actor, owners: dict[str, dict[Any, Any]]) -> None:
    for path, kind in (("/fhir/R4/SupplyRequest", "request_line"), ("/fhir/R4/SupplyDelivery", "delivery_line")):
        r = c.get(path, params={"_count": 100}, headers=actor.headers)
        if r.status_code == 403:
            continue
        assert r.status_code == 200, r.text
        ids = [int(e["resource"]["id"]) for e in r.json().get("entry", [])]
        if kind == "request_line":
            lines = {line: (req, line) for (req, line) in owners["request_line"]}
            assert all(visible(actor, kind, lines[i], owners) for i in ids), (path, ids)
        else:
            assert all(visible(actor, kind, i, owners) for i in ids), (path, ids)
