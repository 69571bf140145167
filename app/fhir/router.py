"""/fhir/R4: SupplyRequest (create, read, search) over request lines and SupplyDelivery (read,
search) over shipment lines, for hospital systems that speak FHIR. Same API keys and rights as /v1;
every error is an OperationOutcome. See docs/fhir.md for the mappings."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.db import utcnow
from app.deps import Allow, SessionDep, public
from app.errors import allowed_methods
from app.fhir import mapping, service
from app.fhir.outcome import FHIR_MEDIA_TYPE, FhirError, FhirRoute, Issue, outcome_response
from app.principal import Principal

PREFIX = "/fhir/R4"
router = APIRouter(prefix=PREFIX, tags=["fhir"], route_class=FhirRoute)

RequestReader = Annotated[Principal, Allow("admin", "logistics", "requester")]
RequestCreator = Annotated[Principal, Allow("requester")]
DeliveryReader = Annotated[Principal, Allow("admin", "logistics", "requester", "donor", "driver")]
Count = Annotated[int, Query(alias="_count", ge=1, le=500, description="Page size (≤ 500)")]
Cursor = Annotated[str | None, Query(alias="_cursor", max_length=200, description="From the Bundle's next link")]
# Ids are 32-bit integer columns; a larger number names nothing (and PostgreSQL would refuse to compare it).
MAX_ID = service.MAX_ID
_DIGITS = re.compile(r"[0-9]{1,10}")
FHIR_JSON = {"content": {FHIR_MEDIA_TYPE: {}}}
# The FHIR R4 SupplyRequest resource (hl7.org/fhir/R4/supplyrequest.html, and docs/fhir.md for the elements we
# read); its full structure is the FHIR specification's, checked by the FHIR models: a resource that breaks it is 400.
SUPPLY_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A FHIR R4 SupplyRequest resource",
    "properties": {"resourceType": {"const": "SupplyRequest"}},
    "required": ["resourceType"],
}
# Search parameters, as the OpenAPI document states them (a value outside these patterns is a 400 OperationOutcome).
ORGANIZATION_REF = r"^(Organization/)?[0-9]{1,10}$"
_CODES_DOC = "Comma-separated status codes (OR), each optionally `system|code`"


def _token_list(codes: tuple[str, ...]) -> str:
    """A token search parameter: comma-separated codes, each optionally prefixed `system|` (see `_tokens`)."""
    token = rf"(?:[^,]*\|)?\s*(?:{'|'.join(re.escape(c) for c in codes)})\s*"
    return rf"^{token}(?:,{token})*$"


async def fhir_json_body(request: Request) -> Any:
    """The raw resource: FHIR bodies are validated by the FHIR models, not by a FastAPI schema."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in (FHIR_MEDIA_TYPE, "application/json"):
        raise FhirError(415, [Issue(f"send the resource as {FHIR_MEDIA_TYPE} (or application/json)")])
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirError(400, [Issue("the body is not valid JSON")]) from exc


FhirBody = Annotated[Any, Depends(fhir_json_body)]


def _resource(resource: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(resource.model_dump_json(), status_code=status_code, media_type=FHIR_MEDIA_TYPE, headers=headers)


def _versioned(resource: Any, **kwargs: Any) -> Response:
    response = _resource(resource, **kwargs)
    response.headers["ETag"] = f'W/"{resource.meta.versionId}"'
    return response


def _positive_id(raw: str) -> int | None:
    if not _DIGITS.fullmatch(raw) or not 0 < int(raw) <= MAX_ID:
        return None
    return int(raw)


def _id(resource_type: str, raw: str) -> int:
    """FHIR ids are strings; ours are positive integers, and anything else names nothing."""
    value = _positive_id(raw)
    if value is None:
        raise FhirError(404, [Issue(f"{resource_type}/{raw} not found")])
    return value


def _tokens(raw: str | None, allowed: tuple[str, ...], name: str) -> set[str] | None:
    """A token search parameter: comma-separated codes (OR), each optionally `system|code`."""
    if raw is None:
        return None
    codes = {part.split("|")[-1].strip() for part in raw.split(",")}
    unknown = sorted(codes - set(allowed))
    if unknown:
        raise FhirError(400, [Issue(f"unknown code(s) {', '.join(unknown)}; expected {', '.join(allowed)}", name)])
    return codes


def _organization(raw: str | None, name: str) -> int | None:
    """A reference search parameter: `Organization/<id>` or a bare id."""
    if raw is None:
        return None
    value = _positive_id(raw.removeprefix("Organization/"))
    if value is None:
        raise FhirError(400, [Issue("expected Organization/<id>", name)])
    return value


def _bundle(request: Request, resources: list[Any], page: service.SearchPage[Any]) -> Response:
    next_url = str(request.url.include_query_params(_cursor=page.next_cursor)) if page.next_cursor else None
    base = str(request.base_url).rstrip("/") + PREFIX
    return _resource(
        mapping.searchset(resources, base_url=base, total=page.total, self_url=str(request.url), next_url=next_url)
    )


# --------------------------------------------------------------------------- SupplyRequest


@router.post(
    "/SupplyRequest",
    status_code=201,
    responses={201: FHIR_JSON},
    openapi_extra={"requestBody": {"required": True, "content": {FHIR_MEDIA_TYPE: {"schema": SUPPLY_REQUEST_SCHEMA}}}},
)
def create_supply_request(session: SessionDep, principal: RequestCreator, body: FhirBody) -> Response:
    """Create a request with one line from a SupplyRequest (status active). The new resource's id is
    the request line's id."""
    data = mapping.request_input(mapping.parse_supply_request(body))
    view = service.create_supply_request(session, actor=principal, data=data)
    resource = mapping.supply_request(view)
    return _versioned(resource, status_code=201, headers={"Location": f"{PREFIX}/SupplyRequest/{resource.id}"})


@router.get("/SupplyRequest", responses={200: FHIR_JSON})
def search_supply_requests(
    request: Request,
    session: SessionDep,
    principal: RequestReader,
    count: Count = 50,
    cursor: Cursor = None,
    status: Annotated[
        str | None,
        Query(max_length=200, pattern=_token_list(mapping.SUPPLY_REQUEST_STATUSES), description=_CODES_DOC),
    ] = None,
    requester: Annotated[str | None, Query(pattern=ORGANIZATION_REF, description="Organization/<id>")] = None,
) -> Response:
    wanted = _tokens(status, mapping.SUPPLY_REQUEST_STATUSES, "status")
    page = service.search_supply_requests(
        session,
        principal=principal,
        line_statuses=None if wanted is None else mapping.statuses_for(wanted, mapping.REQUEST_STATUS),
        organization_id=_organization(requester, "requester"),
        limit=count,
        cursor=cursor,
    )
    return _bundle(request, [mapping.supply_request(v) for v in page.items], page)


@router.get("/SupplyRequest/{resource_id}", responses={200: FHIR_JSON})
def read_supply_request(session: SessionDep, principal: RequestReader, resource_id: str) -> Response:
    line_id = _id("SupplyRequest", resource_id)
    return _versioned(mapping.supply_request(service.get_supply_request(session, principal=principal, line_id=line_id)))


# --------------------------------------------------------------------------- SupplyDelivery


@router.get("/SupplyDelivery", responses={200: FHIR_JSON})
def search_supply_deliveries(
    request: Request,
    session: SessionDep,
    principal: DeliveryReader,
    count: Count = 50,
    cursor: Cursor = None,
    status: Annotated[
        str | None,
        Query(max_length=200, pattern=_token_list(mapping.SUPPLY_DELIVERY_STATUSES), description=_CODES_DOC),
    ] = None,
    receiver: Annotated[str | None, Query(pattern=ORGANIZATION_REF, description="Organization/<id> receiving")] = None,
) -> Response:
    wanted = _tokens(status, mapping.SUPPLY_DELIVERY_STATUSES, "status")
    page = service.search_supply_deliveries(
        session,
        principal=principal,
        shipment_statuses=None if wanted is None else mapping.statuses_for(wanted, mapping.DELIVERY_STATUS),
        receiver_organization_id=_organization(receiver, "receiver"),
        limit=count,
        cursor=cursor,
    )
    return _bundle(request, [mapping.supply_delivery(v) for v in page.items], page)


@router.get("/SupplyDelivery/{resource_id}", responses={200: FHIR_JSON})
def read_supply_delivery(session: SessionDep, principal: DeliveryReader, resource_id: str) -> Response:
    line_id = _id("SupplyDelivery", resource_id)
    return _versioned(
        mapping.supply_delivery(service.get_supply_delivery(session, principal=principal, line_id=line_id))
    )


# --------------------------------------------------------------------------- capabilities and the rest


@router.get("/metadata", responses={200: FHIR_JSON})
@public
def capability_statement() -> Response:
    """What this server supports (FHIR clients read this first, before authenticating)."""
    return _resource(mapping.capability_statement(utcnow()))


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@public
def unsupported(path: str, request: Request) -> Response:
    """Anything else under /fhir/R4 answers an OperationOutcome too: 405 (with `Allow`) for a method
    we do not offer on a path we serve, 404 for the rest."""
    allow = allowed_methods(request, documented_only=True)
    if allow:
        issue = Issue(f"{request.method} {PREFIX}/{path} is not supported")
        return outcome_response(405, [issue], headers={"Allow": allow})
    return outcome_response(404, [Issue(f"{PREFIX}/{path} is not supported by this server")])
