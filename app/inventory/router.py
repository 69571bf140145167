from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.deps import Allow, IfMatch, ListDep, SecuredRoute, SessionDep, check_if_match, etag_for
from app.errors import Unprocessable
from app.inventory import service
from app.inventory.models import AdjustCreate, LotPublic, MovementKind, MovementPublic, ReceiveCreate
from app.models_common import Timestamp
from app.pagination import PageOut
from app.principal import Principal
from app.strict_input import check_strict_json

router = APIRouter(prefix="/v1/inventory", tags=["inventory"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics")]
Writer = Annotated[Principal, Allow("logistics")]

# Only these kinds may be posted; reserve/release/ship/return happen through plans and shipments.
POSTABLE: dict[str, type[BaseModel]] = {"receive": ReceiveCreate, "adjust": AdjustCreate}

# The body is parsed by hand (below) so that errors name the field itself ("quantity"), not the
# discriminated-union branch ("receive.quantity"); this keeps the documented schema all the same.
_MOVEMENT_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"title": "MovementCreate", "oneOf": [m.model_json_schema() for m in POSTABLE.values()]},
            }
        },
    }
}


def _lot_out(lot: Any, response: Response) -> LotPublic:
    out = service.to_public(lot)
    response.headers["ETag"] = etag_for(out.version)
    return out


@router.get("/lots", response_model=PageOut[LotPublic])
def list_lots(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    site_id: int | None = None,
    item_id: int | None = None,
    region: Annotated[str | None, Query(max_length=100, description="Region of the site's organisation")] = None,
    include_empty: Annotated[bool, Query(description="Also list lots with nothing on hand")] = False,
    expiring_before: Annotated[Timestamp | None, Query(description="Only lots expiring before this")] = None,
) -> PageOut[LotPublic]:
    result = service.list_lots(
        session,
        limit=page.limit,
        cursor=page.cursor,
        site_id=site_id,
        item_id=item_id,
        region=region,
        include_empty=include_empty,
        expiring_before=expiring_before,
    )
    return PageOut(items=[service.to_public(lot) for lot in result.items], next_cursor=result.next_cursor)


@router.get("/lots/{lot_id}", response_model=LotPublic)
def get_lot(session: SessionDep, principal: Reader, lot_id: int, response: Response) -> LotPublic:
    return _lot_out(service.get_lot(session, lot_id=lot_id), response)


@router.get("/movements", response_model=PageOut[MovementPublic])
def list_movements(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    lot_id: int | None = None,
    site_id: int | None = None,
    item_id: int | None = None,
    kind: MovementKind | None = None,
) -> PageOut[MovementPublic]:
    result = service.list_movements(
        session, limit=page.limit, cursor=page.cursor, lot_id=lot_id, site_id=site_id, item_id=item_id, kind=kind
    )
    return PageOut(
        items=[MovementPublic.model_validate(m, from_attributes=True) for m in result.items],
        next_cursor=result.next_cursor,
    )


@router.get("/movements/{movement_id}", response_model=MovementPublic)
def get_movement(session: SessionDep, principal: Reader, movement_id: int) -> MovementPublic:
    return MovementPublic.model_validate(service.get_movement(session, movement_id=movement_id), from_attributes=True)


def _parse_movement(body: dict[str, Any]) -> ReceiveCreate | AdjustCreate:
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in POSTABLE:  # any JSON value may arrive here, even unhashable ones
        raise Unprocessable(
            f"kind must be one of {', '.join(POSTABLE)}; reserve, release, ship and return happen only "
            "through plan approval and shipments",
            field="kind",
        )
    try:
        check_strict_json(POSTABLE[kind], body)  # as for any JSON body (app/strict_input.py): "5" is not a number
        return POSTABLE[kind].model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


@router.post("/movements", status_code=201, response_model=MovementPublic, openapi_extra=_MOVEMENT_BODY_SCHEMA)
def create_movement(
    session: SessionDep,
    principal: Writer,
    body: Annotated[dict[str, Any], Body(description="ReceiveCreate or AdjustCreate, chosen by `kind`")],
    response: Response,
    if_match: IfMatch = None,
) -> MovementPublic:
    """Record a receipt (kind `receive`) or a counted correction (kind `adjust`). For an adjustment,
    `If-Match` may carry the lot's ETag so a correction based on a stale count is refused (412)."""
    data = _parse_movement(body)
    if isinstance(data, ReceiveCreate):
        lot, movement = service.receive(
            session,
            actor=principal,
            site_id=data.site_id,
            item_id=data.item_id,
            quantity=data.quantity,
            lot_code=data.lot_code,
            expires_at=data.expires_at,
            reason=data.reason,
        )
    else:
        if if_match is not None:
            current = service.find_lot(session, lot_id=data.lot_id)
            if current is not None:  # an unknown lot is the service's 422 on lot_id
                check_if_match(if_match, etag_for(current.version))
        lot, movement = service.adjust(
            session, actor=principal, lot_id=data.lot_id, delta=data.delta, reason=data.reason
        )
    response.headers["Location"] = f"/v1/inventory/movements/{movement.id}"
    response.headers["X-Lot-ETag"] = etag_for(lot.version)
    return MovementPublic.model_validate(movement, from_attributes=True)
