"""Requests: a header (organisation, delivery site, justification) with lines, each with its own status.

Requesters own their organisation's requests (create, read, edit while open, cancel); logistics reads
and cancels; admin reads. Lines are edited or cancelled only while `open` — once stock is committed to
a line it belongs to the allocation workflow. Writes lock the request row first (then its lines), so a
requester's edit and a plan approval touching the same lines serialize instead of racing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.items import service as items
from app.organizations.models import Organization
from app.pagination import Page, paginate
from app.principal import Principal
from app.requests.models import RequestCreate, RequestLine, RequestLineUpdate, RequestUpdate, SupplyRequest
from app.requests.open_lines import OpenLine as OpenLine
from app.requests.open_lines import OpenLineRow as OpenLineRow
from app.requests.open_lines import open_line_rows as open_line_rows
from app.requests.open_lines import open_lines as open_lines
from app.requests.status import line_status, summarize_status
from app.sites import service as sites

# Called with the locked request before a write: the router's If-Match check, race-free under the lock.
Precondition = Callable[[SupplyRequest], None] | None

# Requests are delivered to a receiving dock or a food hub, never to a depot or a donor's site.
DELIVERY_SITE_KINDS = ("hospital_dock", "food_hub")


def _visible(principal: Principal) -> Any:
    stmt = select(SupplyRequest)
    if principal.org_bound:
        stmt = stmt.where(SupplyRequest.organization_id == principal.organization_id)
    return stmt


def get_request(session: Session, *, principal: Principal, request_id: int) -> SupplyRequest:
    request = session.exec(_visible(principal).where(SupplyRequest.id == request_id)).first()
    if request is None:
        raise NotFound(f"request {request_id} not found")
    return request


def _locked(
    session: Session, principal: Principal, request_id: int, precondition: Precondition
) -> tuple[SupplyRequest, list[RequestLine]]:
    """The request and its lines, locked for this transaction (request row first, then lines)."""
    stmt = _visible(principal).where(SupplyRequest.id == request_id).with_for_update()
    request = session.exec(stmt).first()
    if request is None:
        raise NotFound(f"request {request_id} not found")
    if precondition is not None:
        precondition(request)
    lines = lines_of(session, request, lock=True)
    _sync_statuses(request, lines)
    return request, lines


def lines_by_request(
    session: Session, request_ids: Iterable[int], *, lock: bool = False
) -> dict[int, list[RequestLine]]:
    """Lines of several requests in one query, each list in id (submission) order."""
    ids = list(request_ids)
    out: dict[int, list[RequestLine]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = select(RequestLine).where(col(RequestLine.request_id).in_(ids)).order_by(col(RequestLine.id))
    if lock:
        stmt = stmt.with_for_update()
    for line in session.exec(stmt).all():
        out[line.request_id].append(line)
    return out


def lines_of(session: Session, request: SupplyRequest, *, lock: bool = False) -> list[RequestLine]:
    assert request.id is not None
    return lines_by_request(session, [request.id], lock=lock)[request.id]


def full_snapshot(request: SupplyRequest, lines: Sequence[RequestLine]) -> dict[str, Any]:
    """Header and lines together: what an audit event of a request write shows before/after."""
    return audit.snapshot(request) | {"lines": [audit.snapshot(line) for line in lines]}


def _check_future(value: datetime | None, *, field: str) -> None:
    if value is not None and value <= utcnow():
        raise Unprocessable("needed_by must be in the future", field=field)


def _check_requester_org(principal: Principal, organization_id: int | None) -> int:
    """Requesters post for their own organisation; naming another one is invalid input, not a hint."""
    own = principal.organization_id
    if own is None:  # only org-bound principals create requests; a key without an org cannot
        raise Unprocessable("this key is not bound to an organization", field="organization_id")
    if organization_id is not None and organization_id != own:
        raise Unprocessable("requesters post requests for their own organization only", field="organization_id")
    return own


def _check_active_org(session: Session, organization_id: int) -> None:
    org = session.get(Organization, organization_id)
    if org is None or not org.active:
        raise Conflict(f"organization {organization_id} has left the coalition and cannot post requests")


def _sync_statuses(request: SupplyRequest, lines: Sequence[RequestLine]) -> bool:
    """Re-derive each line's status from its quantities, and the header's from its lines, so rules
    are checked against what the quantities say even if a writer forgot to update a status."""
    changed = False
    now = utcnow()
    for line in lines:
        status = line_status(
            line.quantity,
            line.quantity_reserved,
            line.quantity_in_transit,
            line.quantity_delivered,
            line.status == "cancelled",
        )
        if status != line.status:
            line.status, line.updated_at, changed = status, now, True
    header = summarize_status(line.status for line in lines)
    if header != request.status:
        request.status, changed = header, True
    return changed


def _touch(request: SupplyRequest, lines: Sequence[RequestLine]) -> None:
    """After any change: statuses re-derived, new version (the ETag covers the lines too)."""
    _sync_statuses(request, lines)
    request.version += 1
    request.updated_at = utcnow()


def create_request(session: Session, *, actor: Principal, data: RequestCreate) -> SupplyRequest:
    org_id = _check_requester_org(actor, data.organization_id)
    _check_active_org(session, org_id)
    sites.get_for_reference(session, data.site_id, field="site_id", organization_id=org_id, kinds=DELIVERY_SITE_KINDS)
    known_items: set[int] = set()
    for i, line in enumerate(data.lines):
        if line.item_id not in known_items:
            items.get_for_reference(session, line.item_id, field=f"lines[{i}].item_id")
            known_items.add(line.item_id)
        _check_future(line.needed_by, field=f"lines[{i}].needed_by")
    request = SupplyRequest(
        organization_id=org_id,
        site_id=data.site_id,
        justification=data.justification,
        status="open",
        created_by_key_id=actor.key_id,
    )
    session.add(request)
    session.flush()
    assert request.id is not None
    lines = [
        RequestLine(
            request_id=request.id,
            item_id=line.item_id,
            quantity=line.quantity,
            priority=line.priority,
            needed_by=line.needed_by,
            status="open",
        )
        for line in data.lines
    ]
    session.add_all(lines)
    session.flush()
    audit.record(
        session, actor=actor, action="request.create", obj=request, before=None, after=full_snapshot(request, lines)
    )
    return request


def update_request(
    session: Session, *, actor: Principal, request_id: int, data: RequestUpdate, precondition: Precondition = None
) -> SupplyRequest:
    request, lines = _locked(session, actor, request_id, precondition)
    changes = data.model_dump(exclude_unset=True)
    if "site_id" in changes and changes["site_id"] is None:
        raise Unprocessable("may not be null", field="site_id")
    if not changes:
        return request
    if request.status != "open":
        raise Conflict(f"request {request_id} is {request.status}; only an open request can be edited")
    if "site_id" in changes:
        sites.get_for_reference(
            session,
            changes["site_id"],
            field="site_id",
            organization_id=request.organization_id,
            kinds=DELIVERY_SITE_KINDS,
        )
    before = full_snapshot(request, lines)
    for key, value in changes.items():
        setattr(request, key, value)
    _touch(request, lines)
    session.add(request)
    session.flush()
    audit.record(
        session, actor=actor, action="request.update", obj=request, before=before, after=full_snapshot(request, lines)
    )
    return request


def _find_line(lines: Sequence[RequestLine], request_id: int, line_id: int) -> RequestLine:
    for line in lines:
        if line.id == line_id:
            return line
    raise NotFound(f"line {line_id} of request {request_id} not found")


def update_line(
    session: Session,
    *,
    actor: Principal,
    request_id: int,
    line_id: int,
    data: RequestLineUpdate,
    precondition: Precondition = None,
) -> SupplyRequest:
    request, lines = _locked(session, actor, request_id, precondition)
    line = _find_line(lines, request_id, line_id)
    changes = data.model_dump(exclude_unset=True)
    for required in ("quantity", "priority"):
        if required in changes and changes[required] is None:
            raise Unprocessable("may not be null", field=required)
    if not changes:
        return request
    if line.status != "open":
        raise Conflict(f"line {line_id} is {line.status}; only an open line can be edited")
    if "needed_by" in changes:
        _check_future(changes["needed_by"], field="needed_by")
    before = audit.snapshot(line)
    for key, value in changes.items():
        setattr(line, key, value)
    line.updated_at = utcnow()
    _touch(request, lines)
    session.add_all([line, request])
    session.flush()
    audit.record(session, actor=actor, action="request_line.update", obj=line, before=before)
    return request


def _cancel_open_lines(lines: Sequence[RequestLine]) -> list[RequestLine]:
    now = utcnow()
    cancelled = []
    for line in lines:
        if line.status == "open":
            line.status = "cancelled"
            line.updated_at = now
            cancelled.append(line)
    return cancelled


def cancel_request(
    session: Session, *, actor: Principal, request_id: int, precondition: Precondition = None
) -> SupplyRequest:
    """Cancels every line still open; lines with stock committed or delivered keep going."""
    request, lines = _locked(session, actor, request_id, precondition)
    before = full_snapshot(request, lines)
    cancelled = _cancel_open_lines(lines)
    if not cancelled:
        raise Conflict(f"request {request_id} has no open line left to cancel")
    _touch(request, lines)
    session.add_all([*cancelled, request])
    session.flush()
    audit.record(
        session, actor=actor, action="request.cancel", obj=request, before=before, after=full_snapshot(request, lines)
    )
    return request


def cancel_line(
    session: Session, *, actor: Principal, request_id: int, line_id: int, precondition: Precondition = None
) -> SupplyRequest:
    request, lines = _locked(session, actor, request_id, precondition)
    line = _find_line(lines, request_id, line_id)
    if line.status != "open":
        raise Conflict(f"line {line_id} is {line.status}; only an open line can be cancelled")
    before = audit.snapshot(line)
    _cancel_open_lines([line])
    _touch(request, lines)
    session.add_all([line, request])
    session.flush()
    audit.record(session, actor=actor, action="request_line.cancel", obj=line, before=before)
    return request


def recompute_statuses(session: Session, *, request: SupplyRequest, lines: Sequence[RequestLine]) -> bool:
    """For the workflow, after it changed reserved / in-transit / delivered quantities of the
    (locked) lines of `request`: re-derive each line's status and the header's, and bump the
    request's version (its representation changed). Returns whether any status changed.
    The caller records its own audit event."""
    changed = _sync_statuses(request, lines)
    request.version += 1
    request.updated_at = utcnow()
    session.add_all([request, *lines])
    return changed


def list_requests(
    session: Session,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    organization_id: int | None = None,
    site_id: int | None = None,
    item_id: int | None = None,
    status: str | None = None,
    priority: str | None = None,
    region: str | None = None,
    created_after: datetime | None = None,
) -> Page[SupplyRequest]:
    """`item_id` and `priority` select requests having a line that matches both (when both are given)."""
    stmt = _visible(principal)
    if organization_id is not None:
        stmt = stmt.where(SupplyRequest.organization_id == organization_id)
    if site_id is not None:
        stmt = stmt.where(SupplyRequest.site_id == site_id)
    if status is not None:
        stmt = stmt.where(SupplyRequest.status == status)
    if created_after is not None:
        stmt = stmt.where(col(SupplyRequest.created_at) > created_after)
    if region is not None:
        in_region = select(Organization.id).where(Organization.region == region)
        stmt = stmt.where(col(SupplyRequest.organization_id).in_(in_region))
    if item_id is not None or priority is not None:
        matching = select(RequestLine.request_id)
        if item_id is not None:
            matching = matching.where(RequestLine.item_id == item_id)
        if priority is not None:
            matching = matching.where(RequestLine.priority == priority)
        stmt = stmt.where(col(SupplyRequest.id).in_(matching))
    return paginate(session, stmt, SupplyRequest.id, limit=limit, cursor=cursor)
