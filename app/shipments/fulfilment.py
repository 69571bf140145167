"""How approvals and shipment events move a request line's quantities (SPEC §2).

remaining = quantity − (reserved + in_transit + delivered). Approval reserves; dispatch moves reserved
to in transit; delivery moves in transit to delivered (a shortfall simply leaves in transit and so
returns to remaining); cancel before dispatch and failure give the quantity back to remaining.
Line and header statuses are re-derived by the requests domain (`recompute_statuses`).

Lock order, shared with the requests domain: request headers (ascending id), then their lines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict
from app.principal import Principal
from app.requests import service as requests
from app.requests.models import RequestLine, SupplyRequest


@dataclass
class LineDelta:
    reserved: int = 0
    in_transit: int = 0
    delivered: int = 0


@dataclass
class LockedLines:
    requests: dict[int, SupplyRequest] = field(default_factory=dict)
    lines_by_request: dict[int, list[RequestLine]] = field(default_factory=dict)
    lines: dict[int, RequestLine] = field(default_factory=dict)


def lock_lines(session: Session, line_ids: Iterable[int]) -> LockedLines:
    """The request lines and their requests (all lines of each), locked and freshly read.
    Missing ids are simply absent from the result."""
    ids = sorted(set(line_ids))
    out = LockedLines()
    if not ids:
        return out
    request_ids = sorted(set(session.exec(select(RequestLine.request_id).where(col(RequestLine.id).in_(ids))).all()))
    if not request_ids:
        return out
    headers = session.exec(
        select(SupplyRequest)
        .where(col(SupplyRequest.id).in_(request_ids))
        .order_by(col(SupplyRequest.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    out.requests = {r.id: r for r in headers if r.id is not None}
    lines = session.exec(
        select(RequestLine)
        .where(col(RequestLine.request_id).in_(request_ids))
        .order_by(col(RequestLine.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for line in lines:
        out.lines_by_request.setdefault(line.request_id, []).append(line)
        if line.id in ids:
            out.lines[line.id] = line
    return out


def apply(
    session: Session,
    *,
    actor: Principal,
    deltas: dict[int, LineDelta],
    action: str,
    locked: LockedLines | None = None,
) -> LockedLines:
    """Add the deltas to the lines' quantities, re-derive statuses, audit each request touched.
    A result outside 0 ≤ reserved, in_transit, delivered and their sum ≤ quantity is a Conflict."""
    locked = locked or lock_lines(session, deltas)
    now = utcnow()
    touched: dict[int, list[int]] = defaultdict(list)
    for line_id in sorted(deltas):
        line = locked.lines.get(line_id)
        if line is None:
            raise Conflict(f"request line {line_id} no longer exists")
        touched[line.request_id].append(line_id)
    for request_id in sorted(touched):
        request = locked.requests[request_id]
        lines = locked.lines_by_request[request_id]
        before = requests.full_snapshot(request, lines)
        for line_id in touched[request_id]:
            line, d = locked.lines[line_id], deltas[line_id]
            reserved = line.quantity_reserved + d.reserved
            in_transit = line.quantity_in_transit + d.in_transit
            delivered = line.quantity_delivered + d.delivered
            if min(reserved, in_transit, delivered) < 0 or reserved + in_transit + delivered > line.quantity:
                raise Conflict(
                    f"request line {line_id}: {action} would leave reserved {reserved}, in transit {in_transit}, "
                    f"delivered {delivered} of {line.quantity}"
                )
            line.quantity_reserved, line.quantity_in_transit, line.quantity_delivered = reserved, in_transit, delivered
            line.updated_at = now
        requests.recompute_statuses(session, request=request, lines=lines)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action=action,
            obj=request,
            before=before,
            after=requests.full_snapshot(request, lines),
        )
    return locked
