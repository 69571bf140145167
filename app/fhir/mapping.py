"""Pure mapping between our rows and FHIR R4 resources (SupplyRequest, SupplyDelivery, Bundle).

No database and no web here. Outgoing resources are built as the `fhir.resources` R4B models (the
same as R4 for these resources), so every response is validated against the FHIR structure before it
leaves. Incoming SupplyRequests are parsed with the same models (400 when they are not valid FHIR),
then checked against our rules (422 naming the element, e.g. `SupplyRequest.quantity.value`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.supplydelivery import SupplyDelivery
from fhir.resources.R4B.supplyrequest import SupplyRequest as FhirSupplyRequest
from pydantic import ValidationError

from app.fhir.outcome import FhirError, Issue
from app.items.models import Item
from app.organizations.models import Organization
from app.requests.models import RequestLine
from app.requests.models import SupplyRequest as RequestRow
from app.shipments.models import Shipment, ShipmentLine
from app.sites.models import Site

BASE = "https://crisis-supply.example/"
SKU_SYSTEM = BASE + "sku"
REQUEST_SYSTEM = BASE + "request"
REQUEST_LINE_SYSTEM = BASE + "request-line"
SHIPMENT_SYSTEM = BASE + "shipment"
SHIPMENT_LINE_SYSTEM = BASE + "shipment-line"
ORGANIZATION_SYSTEM = BASE + "organization"
MAX_QUANTITY = 1_000_000_000
MAX_JUSTIFICATION = 2000

# Request line status → SupplyRequest.status (draft | active | suspended | cancelled | completed | …).
REQUEST_STATUS = {
    "open": "active",
    "partially_allocated": "active",
    "allocated": "active",
    "partially_fulfilled": "active",
    "fulfilled": "completed",
    "cancelled": "cancelled",
}
SUPPLY_REQUEST_STATUSES = ("draft", "active", "suspended", "cancelled", "completed", "entered-in-error", "unknown")
PRIORITY_OUT = {"critical": "stat", "high": "urgent", "routine": "routine"}
PRIORITY_IN = {"stat": "critical", "asap": "high", "urgent": "high", "routine": "routine"}

# Shipment status → SupplyDelivery.status (in-progress | completed | abandoned | entered-in-error).
DELIVERY_STATUS = {
    "planned": "in-progress",
    "dispatched": "in-progress",
    "in_transit": "in-progress",
    "delivered": "completed",
    "failed": "abandoned",
    "returned": "abandoned",
    "cancelled": "abandoned",
}
SUPPLY_DELIVERY_STATUSES = ("in-progress", "completed", "abandoned", "entered-in-error")


def statuses_for(fhir_statuses: set[str], mapping: dict[str, str]) -> set[str]:
    """Our statuses that map to any of the given FHIR statuses (a search by status)."""
    return {ours for ours, theirs in mapping.items() if theirs in fhir_statuses}


# --------------------------------------------------------------------------- outgoing


@dataclass(frozen=True)
class RequestLineView:
    line: RequestLine
    request: RequestRow
    item: Item
    organization: Organization
    site: Site


@dataclass(frozen=True)
class DeliveryView:
    line: ShipmentLine
    shipment: Shipment
    item: Item
    origin: Site
    supplier: Organization
    destination: Site
    receiver: Organization
    occurred_at: datetime


def _instant(value: datetime) -> str:
    return value.isoformat()


def _item_concept(item: Item) -> dict[str, Any]:
    return {"coding": [{"system": SKU_SYSTEM, "code": item.sku, "display": item.name}], "text": item.name}


def _identifier(system: str, value: int | None) -> dict[str, str]:
    return {"system": system, "value": str(value)}


def supply_request(view: RequestLineView) -> FhirSupplyRequest:
    line, request, item = view.line, view.request, view.item
    resource: dict[str, Any] = {
        "resourceType": "SupplyRequest",
        "id": str(line.id),
        # The request's version moves with every change to any of its lines, so it versions each line too.
        "meta": {"versionId": str(request.version), "lastUpdated": _instant(max(request.updated_at, line.updated_at))},
        "identifier": [_identifier(REQUEST_LINE_SYSTEM, line.id), _identifier(REQUEST_SYSTEM, request.id)],
        "status": REQUEST_STATUS[line.status],
        "priority": PRIORITY_OUT[line.priority],
        "itemCodeableConcept": _item_concept(item),
        "quantity": {"value": line.quantity, "unit": item.unit},
        "authoredOn": _instant(request.created_at),
        "requester": {"reference": f"Organization/{view.organization.id}", "display": view.organization.name},
        "deliverTo": {"reference": f"Location/{view.site.id}", "display": view.site.name},
    }
    if line.needed_by is not None:
        resource["occurrenceDateTime"] = _instant(line.needed_by)
    if request.justification:
        resource["reasonCode"] = [{"text": request.justification}]
    return FhirSupplyRequest.model_validate(resource)


def supply_delivery(view: DeliveryView) -> SupplyDelivery:
    line, shipment, item = view.line, view.shipment, view.item
    delivered = shipment.status == "delivered"
    quantity = line.quantity_received if delivered and line.quantity_received is not None else line.quantity
    # R4 types SupplyDelivery.receiver as Practitioner/PractitionerRole; we know the receiving
    # organisation (and, once delivered, who signed), so it is a logical reference by identifier.
    receiver: dict[str, Any] = {
        "identifier": _identifier(ORGANIZATION_SYSTEM, view.receiver.id),
        "display": shipment.received_by or view.receiver.name,
    }
    resource: dict[str, Any] = {
        "resourceType": "SupplyDelivery",
        "id": str(line.id),
        "meta": {"versionId": str(shipment.version), "lastUpdated": _instant(shipment.updated_at)},
        "identifier": [_identifier(SHIPMENT_LINE_SYSTEM, line.id), _identifier(SHIPMENT_SYSTEM, shipment.id)],
        "basedOn": [{"reference": f"SupplyRequest/{line.request_line_id}"}],
        "status": DELIVERY_STATUS[shipment.status],
        "suppliedItem": {
            "quantity": {"value": quantity, "unit": item.unit},
            "itemCodeableConcept": _item_concept(item),
        },
        "occurrenceDateTime": _instant(view.occurred_at),
        "supplier": {"reference": f"Organization/{view.supplier.id}", "display": view.supplier.name},
        "destination": {"reference": f"Location/{view.destination.id}", "display": view.destination.name},
        "receiver": [receiver],
    }
    return SupplyDelivery.model_validate(resource)


def searchset(resources: list[Any], *, base_url: str, total: int, self_url: str, next_url: str | None) -> Bundle:
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    entries = [
        {
            "fullUrl": f"{base_url}/{r.get_resource_type()}/{r.id}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ]
    return Bundle.model_validate(
        {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries or None}
    )


# --------------------------------------------------------------------------- incoming


@dataclass(frozen=True)
class RequestInput:
    """A SupplyRequest reduced to what a one-line request needs (SKU resolved later, against the catalog)."""

    sku: str
    sku_expression: str
    quantity: int
    unit: str | None
    priority: str
    needed_by: datetime | None
    site_id: int
    organization_id: int | None
    justification: str | None


def _expression(loc: tuple[Any, ...]) -> str:
    out = "SupplyRequest"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _issue_from_error(error: Any) -> Issue:
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if not loc and "itemCodeableConcept" in message:
        return Issue("exactly one of itemCodeableConcept or itemReference is required", "SupplyRequest.item[x]")
    if loc and loc[0] in {"occurrenceDateTime", "authoredOn"}:
        message = "must be a dateTime with a time and a UTC offset, e.g. 2026-11-23T12:00:00Z"
    return Issue(message.removeprefix("Value error, "), _expression(loc))


def parse_supply_request(body: Any) -> FhirSupplyRequest:
    """Structural FHIR validation with the R4B model; anything that is not a valid SupplyRequest is 400."""
    if not isinstance(body, dict):
        raise FhirError(400, [Issue("the body must be a JSON object holding a SupplyRequest resource")])
    if body.get("resourceType") != "SupplyRequest":
        raise FhirError(400, [Issue("resourceType must be 'SupplyRequest'", "SupplyRequest.resourceType")])
    try:
        return FhirSupplyRequest.model_validate(body)
    except ValidationError as exc:
        raise FhirError(400, [_issue_from_error(e) for e in exc.errors()]) from exc


_REFERENCE = re.compile(r"^(?P<type>[A-Za-z]+)/(?P<id>[1-9][0-9]{0,17})$")


def _reference_id(reference: Any, expected_type: str, expression: str, issues: list[Issue]) -> int | None:
    text = getattr(reference, "reference", None)
    match = _REFERENCE.match(text or "")
    if match is None or match["type"] != expected_type:
        issues.append(Issue(f"must be a reference of the form '{expected_type}/<id>'", expression + ".reference"))
        return None
    return int(match["id"])


def _sku(resource: FhirSupplyRequest, issues: list[Issue]) -> tuple[str, str]:
    if resource.itemReference is not None:
        issues.append(
            Issue(
                f"not supported; send itemCodeableConcept with a coding in {SKU_SYSTEM}", "SupplyRequest.itemReference"
            )
        )
        return "", ""
    codings = (resource.itemCodeableConcept.coding if resource.itemCodeableConcept else None) or []
    for i, coding in enumerate(codings):
        if coding.system == SKU_SYSTEM:
            expression = f"SupplyRequest.itemCodeableConcept.coding[{i}].code"
            if not coding.code:
                issues.append(Issue("a SKU is required", expression))
            return coding.code or "", expression
    issues.append(Issue(f"needs a coding with system {SKU_SYSTEM} and our SKU", "SupplyRequest.itemCodeableConcept"))
    return "", ""


def _quantity(resource: FhirSupplyRequest, issues: list[Issue]) -> tuple[int, str | None]:
    value: Decimal | None = resource.quantity.value
    if resource.quantity.comparator is not None:
        issues.append(Issue("a comparator is not supported", "SupplyRequest.quantity.comparator"))
    if value is None or value != value.to_integral_value() or not 0 < value <= MAX_QUANTITY:
        issues.append(
            Issue(f"must be a whole number of units from 1 to {MAX_QUANTITY}", "SupplyRequest.quantity.value")
        )
        return 0, None
    return int(value), resource.quantity.unit


def _needed_by(resource: FhirSupplyRequest, issues: list[Issue]) -> datetime | None:
    if resource.occurrencePeriod is not None or resource.occurrenceTiming is not None:
        issues.append(
            Issue("not supported; send occurrenceDateTime (the needed-by time)", "SupplyRequest.occurrence[x]")
        )
    value = resource.occurrenceDateTime
    if value is None:
        return None
    # FHIR allows a bare date or month here; a needed-by deadline needs a time and an offset.
    if not isinstance(value, datetime) or value.tzinfo is None:
        kind = "a date" if isinstance(value, date | str) else "a value"
        issues.append(
            Issue(f"is {kind} without a time; send a dateTime with a UTC offset", "SupplyRequest.occurrenceDateTime")
        )
        return None
    return value


def _justification(resource: FhirSupplyRequest, issues: list[Issue]) -> str | None:
    texts = []
    for concept in resource.reasonCode or []:
        text = concept.text or next((c.display for c in concept.coding or [] if c.display), None)
        if text:
            texts.append(text)
    joined = "; ".join(texts) or None
    if joined is not None and len(joined) > MAX_JUSTIFICATION:
        issues.append(Issue(f"reason texts exceed {MAX_JUSTIFICATION} characters", "SupplyRequest.reasonCode"))
    return joined


def request_input(resource: FhirSupplyRequest) -> RequestInput:
    """Our rules for a SupplyRequest to become a request line; every problem found, as one 422."""
    issues: list[Issue] = []
    if resource.modifierExtension:
        issues.append(Issue("modifier extensions are not supported", "SupplyRequest.modifierExtension"))
    if resource.status not in (None, "active"):
        issues.append(Issue("only an active SupplyRequest can be created", "SupplyRequest.status"))
    priority = PRIORITY_IN.get(resource.priority or "routine")
    if priority is None:
        issues.append(Issue("must be one of routine, urgent, asap, stat", "SupplyRequest.priority"))
    sku, sku_expression = _sku(resource, issues)
    quantity, unit = _quantity(resource, issues)
    needed_by = _needed_by(resource, issues)
    site_id = None
    if resource.deliverTo is None:
        issues.append(Issue("is required: the delivery site, as 'Location/<site id>'", "SupplyRequest.deliverTo"))
    else:
        site_id = _reference_id(resource.deliverTo, "Location", "SupplyRequest.deliverTo", issues)
    organization_id = None
    if resource.requester is not None:
        organization_id = _reference_id(resource.requester, "Organization", "SupplyRequest.requester", issues)
    justification = _justification(resource, issues)
    if issues:
        raise FhirError(422, issues)
    assert priority is not None and site_id is not None
    return RequestInput(
        sku=sku,
        sku_expression=sku_expression,
        quantity=quantity,
        unit=unit,
        priority=priority,
        needed_by=needed_by,
        site_id=site_id,
        organization_id=organization_id,
        justification=justification,
    )


def capability_statement(now: datetime) -> CapabilityStatement:
    def token(name: str, doc: str) -> dict[str, str]:
        return {"name": name, "type": "token", "documentation": doc}

    def reference(name: str, doc: str) -> dict[str, str]:
        return {"name": name, "type": "reference", "documentation": doc}

    return CapabilityStatement.model_validate(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": now.isoformat(),
            "kind": "instance",
            "software": {"name": "crisis-supply"},
            "implementation": {"description": "crisis-supply FHIR R4 interface"},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {"description": "Authorization: Bearer <API key>, with the same rights as /v1"},
                    "resource": [
                        {
                            "type": "SupplyRequest",
                            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                token("status", "active | completed | cancelled (comma = or)"),
                                reference("requester", "Organization/<id>"),
                            ],
                        },
                        {
                            "type": "SupplyDelivery",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                token("status", "in-progress | completed | abandoned (comma = or)"),
                                reference("receiver", "Organization/<id> of the receiving organisation"),
                            ],
                        },
                    ],
                }
            ],
        }
    )
