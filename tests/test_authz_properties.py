"""Property- and function-level authorization (issue 5, item 4).

Property level: no body can set a field its caller may not — workflow quantities and statuses,
ownership, equity weights, a driver's shipment lines, a site's owner, an item's SKU. Each attempt is
rejected (422 naming the field: bodies forbid unknown fields; or 403) and the row is unchanged (the
whole representation, ETag included, read before and after). Function level: a method a route does not
offer is 405 problem+json for everyone, with nothing about the object in it (the role × route matrix
itself is tests/test_authorization_matrix.py). The world: tests/authz_world.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.deps import iter_api_routes
from tests import authz_world
from tests.authz_world import Coalition, db_state
from tests.conftest import row_counts
from tests.factories import Factory


@pytest.fixture
def world(client: TestClient, engine: Engine, factory: Factory) -> Coalition:
    return authz_world.build(client, engine, factory)


def _read(w: Coalition, url: str) -> tuple[Any, str | None]:
    r = w.client.get(url, headers=w.h("admin"))
    assert r.status_code == 200, r.text
    return r.json(), r.headers.get("ETag")


@contextmanager
def unchanged(w: Coalition, *urls: str) -> Iterator[None]:
    """The objects read the same (body and ETag) after the block, and no table gained or lost a row."""
    before = [_read(w, u) for u in urls]
    counts = row_counts(w.engine)
    yield
    assert [_read(w, u) for u in urls] == before
    assert row_counts(w.engine) == counts


def rejected(r: Any, field: str | None = None, status: int = 422) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    if field is not None:
        fields = [e["field"] for e in r.json().get("errors", [])]
        assert any(f == field or f.endswith(f".{field}") for f in fields), (field, r.text)


def each(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """One body fragment per forbidden field: each is tried on its own, so each must be refused."""
    return [{k: v} for k, v in fields.items()]


def _etag(w: Coalition, url: str) -> dict[str, str]:
    return {"If-Match": _read(w, url)[1] or "*"}


# ---------------------------------------------------------------- requesters


def test_a_requester_cannot_set_statuses_progress_or_ownership(world: Coalition) -> None:
    w, c, a = world, world.client, world.h("A")
    request_a = f"/v1/requests/{w.requests['A']}"
    n95_line, gloves_line = w.lines["A"]  # the N95 line is allocated; the gloves line is open
    good_line = {"item_id": w.items["N95"], "quantity": 5}
    create = {"site_id": w.sites["A"], "lines": [good_line]}
    fresh = f"/v1/requests/{c.post('/v1/requests', json=create, headers=a).json()['id']}"  # open
    with unchanged(w, request_a, fresh):
        for extra in each({"status": "fulfilled", "version": 99, "id": 1, "created_by_key_id": 1}):
            rejected(c.post("/v1/requests", json=create | extra, headers=a), next(iter(extra)))
        rejected(
            c.post("/v1/requests", json=create | {"organization_id": w.actors["B"].organization_id}, headers=a),
            "organization_id",
        )
        rejected(c.post("/v1/requests", json=create | {"site_id": w.sites["B"]}, headers=a), "site_id")
        for extra in each(
            {
                "status": "fulfilled",
                "quantity_reserved": 5,
                "quantity_in_transit": 5,
                "quantity_delivered": 5,
                "remaining": 0,
                "request_id": w.requests["B"],
            }
        ):
            rejected(c.post("/v1/requests", json=create | {"lines": [good_line | extra]}, headers=a), next(iter(extra)))

        for extra in each(
            {"status": "cancelled", "organization_id": w.actors["B"].organization_id, "version": 1, "lines": []}
        ):
            r = c.patch(request_a, json=extra, headers=a | _etag(w, request_a))
            rejected(r, next(iter(extra)))
        # an open request may move to another of A's docks, never to another organisation's site
        for site in (w.sites["B"], w.sites["hub"], w.sites["depot"]):
            rejected(c.patch(fresh, json={"site_id": site}, headers=a | _etag(w, fresh)), "site_id")
        rejected(c.patch(request_a, json={"site_id": w.sites["B"]}, headers=a | _etag(w, request_a)), status=409)
        for line in (n95_line, gloves_line):
            for extra in each(
                {
                    "status": "fulfilled",
                    "quantity_reserved": 1,
                    "quantity_in_transit": 1,
                    "quantity_delivered": 1,
                    "item_id": w.items["GLOVES"],
                    "request_id": w.requests["B"],
                }
            ):
                r = c.patch(f"{request_a}/lines/{line}", json=extra, headers=a | _etag(w, request_a))
                rejected(r, next(iter(extra)))
        # stock is committed to the N95 line: it belongs to the workflow now
        r = c.patch(f"{request_a}/lines/{n95_line}", json={"quantity": 1}, headers=a | _etag(w, request_a))
        rejected(r, status=409)

        report = {"item_id": w.items["N95"], "on_hand": 5}
        other_org = {"organization_id": w.actors["B"].organization_id}
        rejected(c.post("/v1/usage-reports", json=report | other_org, headers=a), "organization_id")
        for extra in each({"estimated_daily_usage": 1.0, "days_of_supply": 99.0, "created_by_key_id": 1}):
            rejected(c.post("/v1/usage-reports", json=report | extra, headers=a), next(iter(extra)))


def test_only_staff_set_equity_weights_and_only_admin_keys_and_organisations(world: Coalition) -> None:
    w, c = world, world.client
    own = f"/v1/organizations/{w.actors['A'].organization_id}"
    donor_own = f"/v1/organizations/{w.actors['D1'].organization_id}"
    with unchanged(w, own, donor_own):
        for who, url in (("A", own), ("D1", donor_own)):
            h = w.h(who)
            rejected(c.put(f"{url}/equity-weight", json={"equity_weight": 10}, headers=h), status=403)
            rejected(c.patch(url, json={"equity_weight": 10}, headers=h | _etag(w, url)), status=403)
            rejected(c.post(f"{url}/leave", headers=h), status=403)
            body = {"name": "mine", "role": "admin"}
            rejected(c.post("/v1/api-keys", json=body, headers=h), status=403)
            site = {"organization_id": w.actors[who].organization_id, "name": "x", "kind": "depot", "lat": 1, "lon": 1}
            rejected(c.post("/v1/sites", json=site, headers=h), status=403)
        lg = w.h("logistics")
        rejected(c.patch(own, json={"equity_weight": 10}, headers=lg | _etag(w, own)), status=403)  # admin only
        rejected(c.post("/v1/api-keys", json={"name": "x", "role": "admin"}, headers=lg), status=403)
        admin = w.h("admin")
        for extra in each({"active": False, "version": 7, "id": 1}):
            rejected(c.patch(own, json=extra, headers=admin | _etag(w, own)), next(iter(extra)))
        for extra in each({"key_hash": "0" * 64, "prefix": "x", "revoked_at": None, "id": 1}):
            body = {"name": "k", "role": "logistics"} | extra
            rejected(c.post("/v1/api-keys", json=body, headers=admin), next(iter(extra)))
    # what logistics may do: set a weight (and nothing else about the organisation changes)
    before = _read(w, own)[0]
    after = c.put(f"{own}/equity-weight", json={"equity_weight": 2.5}, headers=w.h("logistics")).json()
    assert after["equity_weight"] == 2.5
    assert {k: v for k, v in after.items() if k not in {"equity_weight", "version", "updated_at"}} == {
        k: v for k, v in before.items() if k not in {"equity_weight", "version", "updated_at"}
    }


# ---------------------------------------------------------------- donors


def test_a_donor_cannot_set_a_pledges_status_commitment_or_owner(world: Coalition) -> None:
    w, c, d = world, world.client, world.h("D1")
    confirmed, open_ = f"/v1/pledges/{w.pledges['D1']}", f"/v1/pledges/{w.pledges['D1-open']}"
    create = {"item_id": w.items["N95"], "site_id": w.sites["D1"], "quantity": 10}
    with unchanged(w, confirmed, open_):
        for extra in each(
            {
                "status": "confirmed",
                "committed": 10,
                "organization_id": w.actors["D2"].organization_id,
                "received_lot_id": w.lots["N95"],
                "received_quantity": 10,
                "version": 5,
            }
        ):
            rejected(c.post("/v1/pledges", json=create | extra, headers=d), next(iter(extra)))
        rejected(c.post("/v1/pledges", json=create | {"site_id": w.sites["D2"]}, headers=d), "site_id")
        rejected(c.post("/v1/pledges", json=create | {"site_id": w.sites["depot"]}, headers=d), "site_id")
        rejected(c.post(f"{open_}/confirm", headers=d), status=403)
        rejected(c.post(f"{confirmed}/receive", json={"depot_site_id": w.sites["depot"]}, headers=d), status=403)
        rejected(c.post(f"{confirmed}/cancel", headers=d), status=409)  # confirmed: no longer the donor's to withdraw
    # a body on an action that takes none is ignored: cancelling cannot smuggle in a status
    r = c.post(f"{open_}/cancel", json={"status": "received", "committed": 7}, headers=d)
    assert r.status_code == 200 and (r.json()["status"], r.json()["committed"]) == ("cancelled", 0), r.text


# ---------------------------------------------------------------- drivers


def test_a_driver_cannot_change_shipment_lines_or_assignments(world: Coalition) -> None:
    w, c, v1 = world, world.client, world.h("V1")
    moving = f"/v1/shipments/{w.shipments['depot>A']}"  # V1's, dispatched
    planned = f"/v1/shipments/{w.shipments['D1>B']}"  # V1's, planned
    unassigned = f"/v1/shipments/{w.shipments['D2>A']}"
    line = _read(w, moving)[0]["lines"][0]
    other_line = _read(w, planned)[0]["lines"][0]
    with unchanged(w, moving, planned, unassigned):
        receipt = {"line_id": line["id"], "quantity_received": line["quantity"]}
        for extra in each(
            {"driver_key_id": w.actors["V1"].key_id, "destination_site_id": w.sites["hub"], "plan_id": 1, "version": 1}
        ):
            rejected(c.post(f"{moving}/events", json={"status": "delivered"} | extra, headers=v1), next(iter(extra)))
        for bad, field in (
            ({"line_id": other_line["id"], "quantity_received": 1}, "lines[0].line_id"),  # a line of another shipment
            ({"line_id": line["id"], "quantity_received": line["quantity"] + 1}, "lines[0].quantity_received"),
            (receipt | {"quantity": line["quantity"] * 2}, "quantity"),
            (receipt | {"item_id": w.items["GLOVES"]}, "item_id"),
            (receipt | {"lot_id": w.lots["GLOVES"]}, "lot_id"),
        ):
            rejected(c.post(f"{moving}/events", json={"status": "delivered", "lines": [bad]}, headers=v1), field)
        # received quantities go with a delivery only
        rejected(c.post(f"{planned}/events", json={"status": "dispatched", "lines": [receipt]}, headers=v1), "lines")
        rejected(c.post(f"{planned}/events", json={"status": "cancelled"}, headers=v1), status=403)
        for url in (unassigned, planned):
            r = c.post(f"{url}/assign", json={"driver_key_id": w.actors["V1"].key_id}, headers=v1)
            rejected(r, status=403)
        # logistics may assign, but only a driver key
        for key in ("A", "logistics"):
            r = c.post(f"{unassigned}/assign", json={"driver_key_id": w.actors[key].key_id}, headers=w.h("logistics"))
            rejected(r, "driver_key_id")
    # what a driver may do: report delivery of its own shipment, with a shortfall
    receipt = {"line_id": line["id"], "quantity_received": line["quantity"] - 3, "shortfall_reason": "damaged"}
    r = c.post(f"{moving}/events", json={"status": "delivered", "lines": [receipt]}, headers=v1)
    assert r.status_code == 201, r.text
    got = r.json()["lines"][0]
    assert (got["quantity_received"], got["quantity"]) == (line["quantity"] - 3, line["quantity"])


# ---------------------------------------------------------------- logistics


def test_logistics_cannot_move_a_site_to_another_owner_or_rename_a_sku(world: Coalition) -> None:
    w, c, lg = world, world.client, world.h("logistics")
    site, item = f"/v1/sites/{w.sites['A']}", f"/v1/items/{w.items['N95']}"
    lot = f"/v1/inventory/lots/{w.lots['GLOVES']}"
    with unchanged(w, site, item, lot):
        for extra in each(
            {"organization_id": w.actors["B"].organization_id, "kind": "depot", "active": False, "version": 9}
        ):
            rejected(c.patch(site, json=extra, headers=lg | _etag(w, site)), next(iter(extra)))
        for extra in each({"sku": "KN95", "id": 77, "active": False}):
            rejected(c.patch(item, json=extra, headers=lg | _etag(w, item)), next(iter(extra)))
        # the ledger: only receive and adjust may be posted; reservations move with plans and shipments
        for kind in ("reserve", "release", "ship", "return"):
            body = {"kind": kind, "lot_id": w.lots["GLOVES"], "quantity": 1}
            rejected(c.post("/v1/inventory/movements", json=body, headers=lg), "kind")
        receive = {"kind": "receive", "site_id": w.sites["depot"], "item_id": w.items["GLOVES"], "quantity": 1}
        for extra in each({"delta_reserved": 1, "lot_id": w.lots["GLOVES"], "on_hand": 1}):
            rejected(c.post("/v1/inventory/movements", json=receive | extra, headers=lg), next(iter(extra)))
        adjust = {"kind": "adjust", "lot_id": w.lots["GLOVES"], "delta": -1, "reason": "count"}
        rejected(c.post("/v1/inventory/movements", json=adjust | {"delta_reserved": -5}, headers=lg), "delta_reserved")
        rejected(c.post("/v1/inventory/movements", json=adjust | {"delta": -50}, headers=lg), status=409)  # reserved
        rejected(c.post("/v1/inventory/movements", json=receive | {"site_id": w.sites["A"]}, headers=lg), "site_id")


def test_plan_edits_change_quantities_only(world: Coalition) -> None:
    w, c, lg = world, world.client, world.h("logistics")
    plan = f"/v1/allocation-runs/{w.proposed_run}/plan"
    line = _read(w, plan)[0]["lines"][0]
    with unchanged(w, plan):
        for extra in each(
            {
                "lot_id": w.lots["GLOVES"],
                "pledge_id": w.pledges["D2"],
                "request_line_id": w.lines["A"][1],
                "source": "lot-1",
                "origin_site_id": w.sites["hub"],
                "manual": False,
            }
        ):
            r = c.patch(f"{plan}/lines/{line['id']}", json={"quantity": 1} | extra, headers=lg | _etag(w, plan))
            rejected(r, next(iter(extra)))


# ---------------------------------------------------------------- function level: methods a route lacks

PROBE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def test_methods_a_route_does_not_offer_are_405_and_reveal_nothing(world: Coalition, engine: Engine) -> None:
    w, c = world, world.client
    offered: dict[str, set[str]] = {}
    for route in iter_api_routes(c.app.routes):  # type: ignore[attr-defined]
        if route.path.startswith("/v1"):
            offered.setdefault(route.path, set()).update(route.methods)
    foreign_id = w.requests["B"]  # A's view: another organisation's object
    before = db_state(engine)
    for path, methods in sorted(offered.items()):
        url = re.sub(r"\{kind\}", "requests", re.sub(r"\{report\}", "gap", path))
        url = re.sub(r"\{[^}]+\}", str(foreign_id), url)
        for method in PROBE_METHODS:
            if method in methods:
                continue
            for headers in ({}, w.h("A"), w.h("V1"), w.h("admin")):
                r = c.request(method, url, headers=headers)
                assert r.status_code == 405, (method, url, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json"), (method, url)
                assert "ETag" not in r.headers and "Location" not in r.headers
                if method != "HEAD":
                    assert set(r.json()) <= {"type", "title", "status", "detail", "instance", "request_id"}, r.text
                allow = {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}
                assert allow == methods, (method, url, allow)  # RFC 9110: every method the path has
    assert db_state(engine) == before
