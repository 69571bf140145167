"""FHIR R4 at /fhir/R4: every response is parsed with fhir.resources' R4B models (the same as R4 for
SupplyRequest, SupplyDelivery, Bundle and OperationOutcome), and requests are built with them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.supplyrequest import SupplyRequest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.db import transaction
from app.requests.models import RequestLine
from tests.conftest import row_counts
from tests.factories import Factory
from tests.fhir_support import (
    FHIR_JSON,
    NEEDED_BY,
    SKU_SYSTEM,
    World,
    bundle,
    created,
    expressions,
    identifier,
    make_world,
    outcome,
    post,
    resource,
)


@pytest.fixture
def w(factory: Factory, engine: Engine) -> World:
    return make_world(factory, engine)


# --------------------------------------------------------------------------- SupplyRequest create / read


def test_create_builds_a_request_line_through_the_api_rules(client: TestClient, engine: Engine, w: World) -> None:
    r = post(client, w.requester, resource(w))
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    made = SupplyRequest.model_validate(r.json())
    assert r.headers["Location"] == f"/fhir/R4/SupplyRequest/{made.id}"
    assert made.status == "active" and made.priority == "urgent"
    assert made.quantity.value == 250 and made.quantity.unit == "each"
    coding = made.itemCodeableConcept.coding[0]
    assert (coding.system, coding.code, coding.display) == (SKU_SYSTEM, w.item.sku, "N95 respirator")
    assert made.occurrenceDateTime == NEEDED_BY
    assert made.requester.reference == f"Organization/{w.requester.organization_id}"
    assert made.deliverTo.reference == f"Location/{w.dock.id}"
    assert identifier(made, "request-line") == made.id

    request_id = identifier(made, "request")
    v1 = client.get(f"/v1/requests/{request_id}", headers=w.requester.headers).json()
    assert v1["site_id"] == w.dock.id and v1["justification"] == "ICU surge"
    (line,) = v1["lines"]
    assert str(line["id"]) == made.id
    assert (line["item_id"], line["quantity"], line["priority"]) == (w.item.id, 250, "high")
    assert datetime.fromisoformat(line["needed_by"]) == NEEDED_BY

    with Session(engine) as s:
        actions = s.exec(select(AuditEvent.action).where(AuditEvent.object_id == request_id)).all()
    assert "request.create" in actions

    read = client.get(r.headers["Location"], headers=w.requester.headers)
    assert read.status_code == 200
    assert SupplyRequest.model_validate(read.json()) == made
    again = client.get(r.headers["Location"], headers=w.requester.headers | {"If-None-Match": read.headers["ETag"]})
    assert again.status_code == 304


def test_plain_json_and_priority_mapping_both_ways(client: TestClient, w: World) -> None:
    for fhir_in, ours, fhir_out in [
        ("stat", "critical", "stat"),
        ("asap", "high", "urgent"),
        ("routine", "routine", "routine"),
    ]:
        body = resource(w, priority=fhir_in).model_dump_json()
        r = client.post(
            "/fhir/R4/SupplyRequest", content=body, headers=w.requester.headers | {"Content-Type": "application/json"}
        )
        assert r.status_code == 201, r.text
        made = SupplyRequest.model_validate(r.json())
        assert made.priority == fhir_out
        v1 = client.get(f"/v1/requests/{identifier(made, 'request')}", headers=w.requester.headers).json()
        assert v1["lines"][0]["priority"] == ours


def test_status_follows_the_line(client: TestClient, engine: Engine, w: World) -> None:
    made = created(client, w)
    request_id = identifier(made, "request")
    with transaction(engine) as s:
        line = s.get(RequestLine, int(made.id))
        assert line is not None
        line.quantity_reserved, line.status = 100, "partially_allocated"
    assert (
        SupplyRequest.model_validate(
            client.get(f"/fhir/R4/SupplyRequest/{made.id}", headers=w.admin.headers).json()
        ).status
        == "active"
    )
    with transaction(engine) as s:
        line = s.get(RequestLine, int(made.id))
        assert line is not None
        line.quantity_reserved, line.quantity_delivered, line.status = 0, 250, "fulfilled"
    assert (
        SupplyRequest.model_validate(
            client.get(f"/fhir/R4/SupplyRequest/{made.id}", headers=w.admin.headers).json()
        ).status
        == "completed"
    )

    second = created(client, w)
    cancel = client.post(f"/v1/requests/{identifier(second, 'request')}/cancel", headers=w.requester.headers)
    assert cancel.status_code == 200
    got = client.get(f"/fhir/R4/SupplyRequest/{second.id}", headers=w.logistics.headers)
    assert SupplyRequest.model_validate(got.json()).status == "cancelled"
    assert request_id != identifier(second, "request")


# --------------------------------------------------------------------------- SupplyRequest search


def test_search_by_status_and_requester(client: TestClient, engine: Engine, w: World) -> None:
    mine = [created(client, w) for _ in range(3)]
    theirs = post(
        client,
        w.other,
        resource(
            w,
            requester=Reference(reference=f"Organization/{w.other.organization_id}"),
            deliverTo=Reference(reference=f"Location/{w.other_dock.id}"),
        ),
    )
    assert theirs.status_code == 201
    with transaction(engine) as s:
        line = s.get(RequestLine, int(mine[0].id))
        assert line is not None
        line.quantity_delivered, line.status = 250, "fulfilled"

    everything = bundle(client.get("/fhir/R4/SupplyRequest", headers=w.logistics.headers))
    assert everything.total == 4 and len(everything.entry) == 4
    for entry in everything.entry:
        res = SupplyRequest.model_validate(entry.resource.model_dump())
        assert entry.fullUrl.endswith(f"/fhir/R4/SupplyRequest/{res.id}") and entry.fullUrl.startswith("http")

    own = bundle(client.get("/fhir/R4/SupplyRequest", headers=w.requester.headers))
    assert sorted(e.resource.id for e in own.entry) == sorted(m.id for m in mine)

    by_org = f"Organization/{w.other.organization_id}"
    assert (
        bundle(client.get("/fhir/R4/SupplyRequest", params={"requester": by_org}, headers=w.admin.headers)).total == 1
    )
    # A requester searching another organisation finds nothing (never a hint that it exists).
    assert (
        bundle(client.get("/fhir/R4/SupplyRequest", params={"requester": by_org}, headers=w.requester.headers)).total
        == 0
    )

    done = bundle(client.get("/fhir/R4/SupplyRequest", params={"status": "completed"}, headers=w.requester.headers))
    assert [e.resource.id for e in done.entry] == [mine[0].id]
    active = bundle(
        client.get(
            "/fhir/R4/SupplyRequest",
            params={"status": "active", "requester": f"Organization/{w.requester.organization_id}"},
            headers=w.logistics.headers,
        )
    )
    assert sorted(e.resource.id for e in active.entry) == sorted(m.id for m in mine[1:])
    assert bundle(client.get("/fhir/R4/SupplyRequest", params={"status": "draft"}, headers=w.admin.headers)).total == 0


def test_search_pages_follow_the_next_link(client: TestClient, w: World) -> None:
    ids = [created(client, w).id for _ in range(3)]
    seen: list[str] = []
    url: str | None = "/fhir/R4/SupplyRequest?_count=2"
    while url:
        page = bundle(client.get(url, headers=w.requester.headers))
        assert page.total == 3
        seen += [e.resource.id for e in page.entry]
        url = next((link.url for link in page.link if link.relation == "next"), None)
    assert seen == ids


def test_bad_search_parameters_are_400_outcomes(client: TestClient, w: World) -> None:
    r = client.get("/fhir/R4/SupplyRequest", params={"status": "bogus"}, headers=w.admin.headers)
    assert r.status_code == 400 and expressions(r) == ["status"]
    r = client.get("/fhir/R4/SupplyDelivery", params={"receiver": "Location/3"}, headers=w.admin.headers)
    assert r.status_code == 400 and expressions(r) == ["receiver"]
    r = client.get("/fhir/R4/SupplyRequest", params={"_count": "0"}, headers=w.admin.headers)
    assert r.status_code == 400 and expressions(r) == ["_count"]
    for cursor in ("garbage", "aWQ6OTk5OTk5OTk5OTk5"):  # the second is a well-formed cursor past any id
        r = client.get("/fhir/R4/SupplyRequest", params={"_cursor": cursor}, headers=w.admin.headers)
        assert r.status_code == 400 and expressions(r) == ["_cursor"]


# --------------------------------------------------------------------------- invalid resources


def _without(w: World, name: str) -> dict[str, Any]:
    body = resource(w).model_dump(mode="json")
    del body[name]
    return body


INVALID: list[tuple[str, Any, int, str]] = [
    ("quantity 0", lambda w: resource(w, quantity=Quantity(value=0)), 422, "SupplyRequest.quantity.value"),
    (
        "fractional quantity",
        lambda w: resource(w, quantity=Quantity(value=Decimal("2.5"))),
        422,
        "SupplyRequest.quantity.value",
    ),
    ("wrong unit", lambda w: resource(w, quantity=Quantity(value=5, unit="box")), 422, "SupplyRequest.quantity.unit"),
    (
        "unknown SKU",
        lambda w: resource(w, itemCodeableConcept=CodeableConcept(coding=[Coding(system=SKU_SYSTEM, code="NOPE")])),
        422,
        "SupplyRequest.itemCodeableConcept.coding[0].code",
    ),
    (
        "no SKU coding",
        lambda w: resource(
            w, itemCodeableConcept=CodeableConcept(coding=[Coding(system="http://snomed.info/sct", code="1")])
        ),
        422,
        "SupplyRequest.itemCodeableConcept",
    ),
    ("missing deliverTo", lambda w: _without(w, "deliverTo"), 422, "SupplyRequest.deliverTo"),
    (
        "deliverTo not a Location",
        lambda w: resource(w, deliverTo=Reference(reference="Organization/1")),
        422,
        "SupplyRequest.deliverTo.reference",
    ),
    (
        "another org's site",
        lambda w: resource(w, deliverTo=Reference(reference=f"Location/{w.other_dock.id}")),
        422,
        "SupplyRequest.deliverTo",
    ),
    (
        "another org as requester",
        lambda w: resource(w, requester=Reference(reference=f"Organization/{w.other.organization_id}")),
        422,
        "SupplyRequest.requester",
    ),
    (
        "needed_by in the past",
        lambda w: resource(w, occurrenceDateTime=datetime(2020, 1, 1, tzinfo=UTC)),
        422,
        "SupplyRequest.occurrenceDateTime",
    ),
    (
        "occurrence without offset",
        lambda w: resource(w).model_dump(mode="json") | {"occurrenceDateTime": "2030-01-01T10:00:00"},
        400,
        "SupplyRequest.occurrenceDateTime",
    ),
    (
        "occurrence date only",
        lambda w: resource(w).model_dump(mode="json") | {"occurrenceDateTime": "2030-01-01"},
        422,
        "SupplyRequest.occurrenceDateTime",
    ),
    ("status draft", lambda w: resource(w, status="draft"), 422, "SupplyRequest.status"),
    ("unknown priority", lambda w: resource(w, priority="whenever"), 422, "SupplyRequest.priority"),
    ("missing quantity", lambda w: _without(w, "quantity"), 400, "SupplyRequest.quantity"),
    ("unknown element", lambda w: resource(w).model_dump(mode="json") | {"colour": "red"}, 400, "SupplyRequest.colour"),
    (
        "another resource type",
        lambda w: resource(w).model_dump(mode="json") | {"resourceType": "Patient"},
        400,
        "SupplyRequest.resourceType",
    ),
]


def test_invalid_resources_name_the_element_and_write_nothing(client: TestClient, engine: Engine, w: World) -> None:
    # One test over all cases: each case is one request, and a fresh database per case costs seconds.
    before = row_counts(engine)
    wrong = []
    for case, build, status, element in INVALID:
        r = post(client, w.requester, build(w))
        issue = outcome(r).issue[0]
        named = element in expressions(r) and element in (issue.diagnostics or "")
        if r.status_code != status or not named or (issue.severity, issue.code) != ("error", "invalid"):
            wrong.append((case, r.status_code, r.json()))
    assert wrong == []
    assert row_counts(engine) == before


def test_unparseable_bodies(client: TestClient, engine: Engine, w: World) -> None:
    before = row_counts(engine)
    r = client.post("/fhir/R4/SupplyRequest", content=b"{not json", headers=FHIR_JSON | w.requester.headers)
    assert r.status_code == 400 and outcome(r).issue[0].code == "invalid"
    r = client.post("/fhir/R4/SupplyRequest", content=b"[]", headers=FHIR_JSON | w.requester.headers)
    assert r.status_code == 400
    r = client.post(
        "/fhir/R4/SupplyRequest",
        content=b"<SupplyRequest/>",
        headers={"Content-Type": "application/fhir+xml"} | w.requester.headers,
    )
    assert r.status_code == 415 and outcome(r).issue[0].code == "not-supported"
    assert row_counts(engine) == before


# --------------------------------------------------------------------------- auth, foreign ids, other paths


def test_rights_and_foreign_ids_answer_outcomes(client: TestClient, engine: Engine, w: World) -> None:
    made = created(client, w)
    anonymous = client.get(f"/fhir/R4/SupplyRequest/{made.id}")
    assert anonymous.status_code == 401 and outcome(anonymous).issue[0].code == "login"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    for actor in (w.donor, w.driver):
        r = client.get(f"/fhir/R4/SupplyRequest/{made.id}", headers=actor.headers)
        assert r.status_code == 403 and outcome(r).issue[0].code == "forbidden"
    before = row_counts(engine)
    for actor in (w.admin, w.logistics, w.donor):
        r = post(client, actor, resource(w))
        assert r.status_code == 403 and outcome(r).issue[0].code == "forbidden"
    assert row_counts(engine) == before
    for path in (
        f"/fhir/R4/SupplyRequest/{made.id}",
        "/fhir/R4/SupplyRequest/987654",
        "/fhir/R4/SupplyRequest/999999999999999999",
        "/fhir/R4/SupplyRequest/abc",
        "/fhir/R4/SupplyRequest/²",
    ):
        r = client.get(path, headers=w.other.headers)
        assert r.status_code == 404 and outcome(r).issue[0].code == "not-found"


def test_capability_statement_and_unsupported_paths(client: TestClient, w: World) -> None:
    r = client.get("/fhir/R4/metadata")
    assert r.status_code == 200
    capabilities = CapabilityStatement.model_validate(r.json())
    served = {res.type: {i.code for i in res.interaction} for res in capabilities.rest[0].resource}
    assert served == {"SupplyRequest": {"create", "read", "search-type"}, "SupplyDelivery": {"read", "search-type"}}
    r = client.put("/fhir/R4/SupplyRequest/1", content=b"{}", headers=FHIR_JSON | w.requester.headers)
    assert r.status_code == 405 and outcome(r).issue[0].code == "not-supported"
    r = client.get("/fhir/R4/Patient/1", headers=w.admin.headers)
    assert r.status_code == 404 and outcome(r).issue[0].code == "not-found"


def test_an_organisation_that_left_cannot_post(client: TestClient, engine: Engine, w: World) -> None:
    assert (
        client.post(f"/v1/organizations/{w.requester.organization_id}/leave", headers=w.admin.headers).status_code
        == 200
    )
    before = row_counts(engine)
    r = post(client, w.requester, resource(w))
    assert r.status_code == 409 and outcome(r).issue[0].code == "conflict"
    assert row_counts(engine) == before
