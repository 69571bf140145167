"""Every /v1 route × every role (+ anonymous and a revoked key), with real requests, against SPEC §1."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.db import make_engine
from app.deps import declared_roles, iter_api_routes
from app.main import create_app
from tests.authz_table import ALL, EXPECTED
from tests.factories import Factory

MISSING_ID = "987654"


def _v1_routes() -> list[tuple[str, str, APIRoute]]:
    app = create_app(engine=make_engine("sqlite://"))
    out = []
    for route in iter_api_routes(app.routes):
        if route.path.startswith("/v1"):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                out.append((method, route.path, route))
    return out


ROUTES = _v1_routes()


def test_every_route_is_in_the_rights_table() -> None:
    found = {f"{m} {p}" for m, p, _ in ROUTES}
    assert found - EXPECTED.keys() == set(), "routes missing from tests/authz_table.py"
    assert EXPECTED.keys() - found == set(), "table lists routes the app does not have"


@pytest.mark.parametrize(("method", "path", "route"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_declared_roles_match_the_table(method: str, path: str, route: APIRoute) -> None:
    assert declared_roles(route) == EXPECTED[f"{method} {path}"]


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", MISSING_ID, path)


def test_matrix_with_real_requests(client: TestClient, factory: Factory) -> None:
    actors = {role: factory.actor(role) for role in sorted(ALL)}
    revoked = factory.actor("admin")
    admin = actors["admin"]
    assert client.post(f"/v1/api-keys/{revoked.key_id}/revoke", headers=admin.headers).status_code == 200
    failures = []
    for method, path, _ in ROUTES:
        allowed = EXPECTED[f"{method} {path}"]
        url = _url(path)
        body = {} if method in {"POST", "PUT", "PATCH"} else None
        anon = client.request(method, url, json=body)
        if anon.status_code != 401:
            failures.append(f"{method} {path} anonymous -> {anon.status_code}")
        bad = client.request(method, url, json=body, headers=revoked.headers)
        if bad.status_code != 401:
            failures.append(f"{method} {path} revoked key -> {bad.status_code}")
        for role, actor in actors.items():
            status = client.request(method, url, json=body, headers=actor.headers).status_code
            if role in allowed and status in (401, 403):
                failures.append(f"{method} {path} {role} allowed but got {status}")
            if role not in allowed and status != 403:
                failures.append(f"{method} {path} {role} denied but got {status}")
            if status >= 500:
                failures.append(f"{method} {path} {role} -> {status}")
    assert failures == []
