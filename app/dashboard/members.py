"""Pages for coalition members: requester (requests, deliveries, usage), donor (pledges and where they
went), driver (assigned shipments and their next steps), admin (organisations and keys)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlmodel import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from app.dashboard.forms import domain_errors, optional, pydantic_errors, text, utc_datetime
from app.dashboard.plans import report_event, shipment_context
from app.dashboard.web import DashboardRoute, FormDep, Viewer, all_pages, allow, by_id, redirect, render
from app.deps import SessionDep
from app.errors import DomainError
from app.items import service as items
from app.keys import service as keys
from app.organizations import service as organizations
from app.pledges import service as pledges
from app.pledges.models import PledgeCreate
from app.reports import service as reports
from app.reports.donor_impact import donor_impact_report
from app.requests import service as requests
from app.requests.models import PRIORITIES, RequestCreate
from app.requests.service import DELIVERY_SITE_KINDS
from app.shipments import service as shipments
from app.sites import service as sites
from app.usage import service as usage
from app.usage.models import UsageReportCreate

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

Requester = Annotated[Viewer, allow("requester")]
Donor = Annotated[Viewer, allow("donor")]
Driver = Annotated[Viewer, allow("driver")]
Admin = Annotated[Viewer, allow("admin")]
FORM_LINES = 3  # line rows on the new-request form; empty rows are ignored


def _items(session: Session) -> list[Any]:
    return all_pages(items.list_items, session=session, active=True)


def _own_sites(session: Session, viewer: Viewer, kinds: tuple[str, ...]) -> list[Any]:
    own = all_pages(sites.list_sites, session=session, principal=viewer.principal, active=True)
    return [s for s in own if s.kind in kinds]


# ---------------------------------------------------------------- requester


@router.get("/requests")
def my_requests(request: Request, session: SessionDep, viewer: Requester) -> Response:
    rows = all_pages(requests.list_requests, session=session, principal=viewer.principal)
    rows.sort(key=lambda r: -(r.id or 0))
    lines = requests.lines_by_request(session, [r.id for r in rows]) if rows else {}
    delivered = all_pages(
        shipments.list_shipments, session=session, principal=viewer.principal, filters=shipments.Filters()
    )
    context = shipment_context(session, viewer, list(reversed(delivered)))
    return render(request, "requests.html", viewer, requests=rows, lines=lines, **context)


def _request_form(
    request: Request,
    session: Session,
    viewer: Viewer,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "request_form.html",
        viewer,
        status=status,
        sites=_own_sites(session, viewer, DELIVERY_SITE_KINDS),
        items=_items(session),
        priorities=PRIORITIES,
        rows=range(FORM_LINES),
        values=values or {},
        errors=errors or {},
    )


@router.get("/requests/new")
def new_request(request: Request, session: SessionDep, viewer: Requester) -> Response:
    return _request_form(request, session, viewer)


def _request_body(form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body for the form, and the raw values to redisplay. A line row left entirely empty is
    skipped; the body's line indexes are the rows' indexes as long as no row in between is empty."""
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    lines = []
    for i in range(FORM_LINES):
        row = {f: text(form, f"lines[{i}].{f}") for f in ("item_id", "quantity", "priority", "needed_by")}
        if not (row["item_id"] or row["quantity"] or row["needed_by"]) and i > 0:
            continue
        line: dict[str, Any] = {"item_id": row["item_id"] or None, "quantity": row["quantity"] or None}
        if row["priority"]:
            line["priority"] = row["priority"]
        if row["needed_by"]:
            line["needed_by"] = utc_datetime(row["needed_by"])
        lines.append(line)
    body = {"site_id": optional(form, "site_id"), "justification": optional(form, "justification"), "lines": lines}
    return body, values


@router.post("/requests/new")
def post_request(request: Request, session: SessionDep, viewer: Requester, form: FormDep) -> Response:
    body, values = _request_body(form)
    try:
        created = requests.create_request(session, actor=viewer.principal, data=RequestCreate.model_validate(body))
    except ValidationError as exc:
        return _request_form(request, session, viewer, 422, values, pydantic_errors(exc))
    except DomainError as exc:
        session.rollback()
        return _request_form(request, session, viewer, exc.status, values, domain_errors(exc))
    viewer.sess.flash("ok", f"Request {created.id} submitted with {len(body['lines'])} line(s).")
    return redirect(f"/requests#request-{created.id}")


def _usage_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    rows = [usage.to_public(r) for r in all_pages(usage.list_reports, session=session, principal=viewer.principal)]
    rows.sort(key=lambda r: (r.reported_at, r.id), reverse=True)
    return render(
        request,
        "usage.html",
        viewer,
        status=status,
        reports=rows,
        items=_items(session),
        item_by_id=by_id(all_pages(items.list_items, session=session)),
        values=values or {},
        errors=errors or {},
        threshold=request.app.state.settings.days_of_supply_threshold,
    )


@router.get("/usage")
def my_usage(request: Request, session: SessionDep, viewer: Requester) -> Response:
    return _usage_page(request, session, viewer)


@router.post("/usage")
def post_usage(request: Request, session: SessionDep, viewer: Requester, form: FormDep) -> Response:
    values = {k: text(form, k) for k in ("item_id", "on_hand", "daily_usage")}
    body = {k: v or None for k, v in values.items()}
    try:
        report = usage.create_report(session, actor=viewer.principal, data=UsageReportCreate.model_validate(body))
    except ValidationError as exc:
        return _usage_page(request, session, viewer, 422, values, pydantic_errors(exc))
    except DomainError as exc:
        session.rollback()
        return _usage_page(request, session, viewer, exc.status, values, domain_errors(exc))
    viewer.sess.flash("ok", f"Usage report {report.id} saved.")
    return redirect("/usage")


# ---------------------------------------------------------------- donor


def _pledges_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    rows = all_pages(pledges.list_pledges, session=session, principal=viewer.principal)
    rows.sort(key=lambda p: -(p.id or 0))
    own_sites = all_pages(sites.list_sites, session=session, principal=viewer.principal)
    return render(
        request,
        "pledges.html",
        viewer,
        status=status,
        pledges=rows,
        impact=donor_impact_report(session, scope=reports.scope_for(viewer.principal)),
        item_by_id=by_id(all_pages(items.list_items, session=session)),
        site_names={s.id: s.name for s in own_sites},
        items=_items(session),
        sites=[s for s in own_sites if s.kind == "donor_site" and s.active],
        values=values or {},
        errors=errors or {},
    )


@router.get("/pledges")
def my_pledges(request: Request, session: SessionDep, viewer: Donor) -> Response:
    return _pledges_page(request, session, viewer)


@router.post("/pledges")
def post_pledge(request: Request, session: SessionDep, viewer: Donor, form: FormDep) -> Response:
    values = {k: text(form, k) for k in ("item_id", "site_id", "quantity", "available_from", "note")}
    body = {k: v or None for k, v in values.items()}
    body["available_from"] = utc_datetime(body["available_from"])
    try:
        pledge = pledges.create_pledge(session, actor=viewer.principal, data=PledgeCreate.model_validate(body))
    except ValidationError as exc:
        return _pledges_page(request, session, viewer, 422, values, pydantic_errors(exc))
    except DomainError as exc:
        session.rollback()
        return _pledges_page(request, session, viewer, exc.status, values, domain_errors(exc))
    viewer.sess.flash("ok", f"Pledge {pledge.id} recorded; logistics will confirm it.")
    return redirect("/pledges")


# ---------------------------------------------------------------- driver


@router.get("/driver")
def my_shipments(request: Request, session: SessionDep, viewer: Driver) -> Response:
    rows = all_pages(shipments.list_shipments, session=session, principal=viewer.principal, filters=shipments.Filters())
    context = shipment_context(session, viewer, rows)
    active = [s for s in context["shipments"] if s.status not in shipments.TERMINAL]
    done = [s for s in reversed(context["shipments"]) if s.status in shipments.TERMINAL]
    context.pop("shipments")
    return render(request, "driver.html", viewer, active=active, done=done, **context)


@router.post("/driver/shipments/{shipment_id}/events")
def driver_event(session: SessionDep, viewer: Driver, shipment_id: int, form: FormDep) -> Response:
    status = text(form, "status")
    data: dict[str, Any] = {"status": status, "note": optional(form, "note")}
    if status == "delivered":
        receipts = []
        for line_id in form.getlist("line_id"):
            lid = str(line_id)
            receipts.append(
                {
                    "line_id": lid,
                    "quantity_received": text(form, f"received[{lid}]") or None,
                    "shortfall_reason": optional(form, f"shortfall[{lid}]"),
                }
            )
        data["lines"] = receipts or None
        data["received_by"] = optional(form, "received_by")
    report_event(session, viewer, shipment_id, data, text(form, "version"))
    return redirect(f"/driver#shipment-{shipment_id}")


# ---------------------------------------------------------------- admin


@router.get("/admin")
def admin(request: Request, session: SessionDep, viewer: Admin) -> Response:
    orgs = all_pages(organizations.list_organizations, session=session, principal=viewer.principal)
    return render(
        request,
        "admin.html",
        viewer,
        orgs=orgs,
        org_names={o.id: o.name for o in orgs},
        keys=all_pages(keys.list_keys, session=session, principal=viewer.principal),
    )
