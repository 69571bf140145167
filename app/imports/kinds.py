"""What each kind of import reads and how each row is written (through the domain's service).

Columns are documented in docs/imports.md. `export_only` columns (ids, balances, timestamps) appear in
exports; an import accepts and ignores them, so an export can be edited and imported back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from app.imports import references as refs
from app.imports.parsers import Row
from app.imports.service import REQUIRED, Context, Locator, as_text, row_locator
from app.inventory import service as inventory
from app.inventory.models import ReceiveCreate
from app.items import service as items
from app.items.models import ItemCreate, ItemUpdate, SubstituteIn
from app.organizations import service as organizations
from app.organizations.models import OrganizationCreate
from app.pledges import service as pledges
from app.pledges.models import PledgeCreate
from app.requests import service as requests
from app.requests.models import RequestCreate, RequestLineCreate
from app.sites import service as sites
from app.sites.models import SiteCreate

Handler = Callable[[Context, list[Row]], int]


@dataclass(frozen=True)
class KindSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    export_only: tuple[str, ...]
    roles: tuple[str, ...]  # who may import this kind through the API (the CLI is the operator)
    handler: Handler


def _cells(row: Row, text: tuple[str, ...], raw: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {c: as_text(row.get(c)) for c in text}
    out.update({c: row.get(c) for c in raw})
    return out


def _per_row(ctx: Context, rows: list[Row], build: Callable[[Row], Callable[[], Any] | None], locate: Any) -> int:
    """One write per row; `build` resolves and validates (reporting what is wrong) and returns the write."""
    created = 0
    for row in rows:
        write = build(row)
        if write is not None and ctx.attempt(write, locate(row)) is not None:
            created += 1
        ctx.advance()
    return created


# ---------------------------------------------------------------- organisations, sites


def _organizations(ctx: Context, rows: list[Row]) -> int:
    def build(row: Row) -> Callable[[], Any] | None:
        data = _cells(row, ("name", "kind", "region"), ("equity_weight",))
        body = ctx.validate(OrganizationCreate, data, row_locator(row, {}))
        if body is None:
            return None
        return partial(organizations.create_organization, ctx.session, actor=ctx.actor, data=body)

    return _per_row(ctx, rows, build, lambda row: row_locator(row, {}))


SITE_COLUMNS = {"organization_id": "organization"}


def _sites(ctx: Context, rows: list[Row]) -> int:
    def build(row: Row) -> Callable[[], Any] | None:
        org_id = refs.organization(ctx, row, "organization")
        data = _cells(row, ("name", "kind", "address"), ("lat", "lon")) | {"organization_id": org_id or 0}
        body = ctx.validate(SiteCreate, data, row_locator(row, SITE_COLUMNS))
        if body is None or org_id is None:
            return None
        return partial(sites.create_site, ctx.session, actor=ctx.actor, data=body)

    return _per_row(ctx, rows, build, lambda row: row_locator(row, SITE_COLUMNS))


# ---------------------------------------------------------------- items and their substitutes


def _substitutes(ctx: Context, row: Row) -> list[dict[str, Any]] | None:
    """ "KN95:0.3; SURGICAL" → [{sku: KN95, penalty: 0.3}, {sku: SURGICAL}] (penalty defaults to 0)."""
    cell = as_text(row.get("substitutes"))
    out: list[dict[str, Any]] = []
    for part in (cell or "").replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        sku, sep, penalty = part.partition(":")
        if not sku.strip() or (sep and not penalty.strip()):
            ctx.fail(row.number, "substitutes", f"{part!r}: write SKU or SKU:penalty, separated by ';'")
            return None
        out.append({"sku": sku.strip()} | ({"penalty": penalty.strip()} if sep else {}))
    return out


def _items(ctx: Context, rows: list[Row]) -> int:
    """Substitutes may name items anywhere in the file (N95 and KN95 often substitute for each other):
    an item is created with the substitutes that exist by then, and the others are added once every
    row is in."""
    first_row_of: dict[str, int] = {}
    for row in rows:
        sku = as_text(row.get("sku"))
        if sku is not None:
            first_row_of.setdefault(sku, row.number)
    later: list[tuple[Row, int, list[SubstituteIn]]] = []
    created = 0
    for row in rows:
        locate = row_locator(row, {})
        subs = _substitutes(ctx, row)
        data = _cells(row, ("sku", "name", "category", "unit"), ("pack_size", "shelf_life_days"))
        body = ctx.validate(ItemCreate, data | {"substitutes": subs or []}, locate)
        if body is not None and subs is not None:
            waiting = [
                s
                for s in body.substitutes
                if first_row_of.get(s.sku, 0) > row.number and items.get_by_sku(ctx.session, s.sku) is None
            ]
            now = body.model_copy(update={"substitutes": [s for s in body.substitutes if s not in waiting]})
            item = ctx.attempt(partial(items.create_item, ctx.session, actor=ctx.actor, data=now), locate)
            if item is not None:
                created += 1
                if waiting:
                    later.append((row, item.id or 0, body.substitutes))
        ctx.advance()
    failed = ctx.failed_rows()
    for row, item_id, wanted in later:
        broken = [s.sku for s in wanted if first_row_of.get(s.sku, 0) in failed]
        if broken:
            where = ", ".join(f"{sku!r} (row {first_row_of[sku]})" for sku in broken)
            ctx.fail(row.number, "substitutes", f"names {where}, which has errors")
            continue
        update = ItemUpdate(substitutes=wanted)
        ctx.attempt(
            partial(items.update_item, ctx.session, actor=ctx.actor, item_id=item_id, data=update),
            row_locator(row, {}),
        )
    return created


# ---------------------------------------------------------------- depot stock


INVENTORY_COLUMNS = {"site_id": "site", "item_id": "sku"}


def _inventory(ctx: Context, rows: list[Row]) -> int:
    """Each row receives stock through the ledger (a `receive` movement, like POST /v1/inventory/movements)."""

    def build(row: Row) -> Callable[[], Any] | None:
        site_id = refs.site(ctx, row, "site", kinds=inventory.DEPOT_KINDS)
        item_id = refs.item(ctx, row, "sku")
        data = _cells(row, ("lot_code", "reason"), ("quantity", "expires_at"))
        data |= {"kind": "receive", "site_id": site_id or 0, "item_id": item_id or 0}
        body = ctx.validate(ReceiveCreate, data, row_locator(row, INVENTORY_COLUMNS))
        if body is None or site_id is None or item_id is None:
            return None
        return partial(
            inventory.receive,
            ctx.session,
            actor=ctx.actor,
            site_id=body.site_id,
            item_id=body.item_id,
            quantity=body.quantity,
            lot_code=body.lot_code,
            expires_at=body.expires_at,
            reason=body.reason,
            reference=f"import row {row.number}",
        )

    return _per_row(ctx, rows, build, lambda row: row_locator(row, INVENTORY_COLUMNS))


# ---------------------------------------------------------------- pledges


PLEDGE_COLUMNS = {"organization_id": "organization", "site_id": "site", "item_id": "sku"}
IMPORTABLE_PLEDGE_STATUSES = ("pledged", "confirmed")


def _pledges(ctx: Context, rows: list[Row]) -> int:
    """Created as the donor organisation would pledge; `status` confirmed also confirms it (as logistics)."""

    def build(row: Row) -> Callable[[], Any] | None:
        status = (as_text(row.get("status")) or "pledged").lower()
        if status not in IMPORTABLE_PLEDGE_STATUSES:
            ctx.fail(row.number, "status", "must be pledged or confirmed (or empty: pledged)")
        org_id = refs.organization(ctx, row, "organization")
        site_id = refs.site(ctx, row, "site", kinds=("donor_site",), organization_id=org_id) if org_id else None
        item_id = refs.item(ctx, row, "sku")
        data = _cells(row, ("note",), ("quantity", "available_from", "expires_at"))
        data |= {"site_id": site_id or 0, "item_id": item_id or 0}
        body = ctx.validate(PledgeCreate, data, row_locator(row, PLEDGE_COLUMNS))
        if body is None or None in (org_id, site_id, item_id) or status not in IMPORTABLE_PLEDGE_STATUSES:
            return None
        donor = ctx.on_behalf("donor", org_id)  # type: ignore[arg-type]

        def write() -> Any:
            pledge = pledges.create_pledge(ctx.session, actor=donor, data=body)
            if status == "confirmed":
                pledges.confirm(ctx.session, actor=ctx.actor, pledge_id=pledge.id)  # type: ignore[arg-type]
            return pledge

        return write

    return _per_row(ctx, rows, build, lambda row: row_locator(row, PLEDGE_COLUMNS, default="organization"))


# ---------------------------------------------------------------- requests


LINE_COLUMNS = {"item_id": "sku", "quantity": "quantity", "priority": "priority", "needed_by": "needed_by"}
HEADER_COLUMNS = {"site_id": "site", "organization_id": "organization", "lines": "request_key"}


def _request_locator(members: list[Row], justification_row: Row) -> Locator:
    """Line errors (lines[i].x) belong to the i-th row of the request; header errors to its first row."""

    def locate(field: str | None) -> tuple[int, str | None]:
        if field and field.startswith("lines["):
            index, _, rest = field[len("lines[") :].partition("]")
            if index.isdigit() and int(index) < len(members):
                return members[int(index)].number, LINE_COLUMNS.get(rest.lstrip("."), rest.lstrip(".") or "sku")
        if field == "justification":
            return justification_row.number, "justification"
        return members[0].number, HEADER_COLUMNS.get(field or "", "organization")

    return locate


def _same_header(ctx: Context, key: str, members: list[Row], column: str) -> str | None:
    """Header cells must agree across a request's rows (empty justification cells are fine)."""
    values = [(row, as_text(row.get(column))) for row in members]
    given = [(row, v) for row, v in values if v is not None or column != "justification"]
    if not given:
        return None
    first_row, first = given[0]
    for row, value in given[1:]:
        if value != first:
            ctx.fail(row.number, column, f"differs from row {first_row.number} of request {key!r} ({first!r})")
    return first


def _requests(ctx: Context, rows: list[Row]) -> int:
    """Rows with the same request_key are the lines of one request, created as the requesting
    organisation would create it (delivery site and lines checked by the requests domain)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = as_text(row.get("request_key"))
        if key is None:
            ctx.fail(row.number, "request_key", REQUIRED)
            ctx.advance()
            continue
        groups.setdefault(key, []).append(row)
    created = 0
    for key, members in groups.items():
        before = len(ctx.errors)
        _same_header(ctx, key, members, "organization")
        _same_header(ctx, key, members, "site")
        justification = _same_header(ctx, key, members, "justification")
        just_row = next((r for r in members if as_text(r.get("justification")) is not None), members[0])
        first = members[0]
        org_id = refs.organization(ctx, first, "organization")
        site_id = None
        if org_id is not None:
            site_id = refs.site(ctx, first, "site", kinds=requests.DELIVERY_SITE_KINDS, organization_id=org_id)
        lines: list[dict[str, Any]] = []
        for row in members:
            item_id = refs.item(ctx, row, "sku")
            data = _cells(row, ("priority",), ("quantity", "needed_by")) | {"item_id": item_id or 0}
            if data["priority"] is not None:
                data["priority"] = data["priority"].lower()
            line = ctx.validate(RequestLineCreate, data, row_locator(row, LINE_COLUMNS))
            lines.append(line.model_dump() if line is not None else {})
        locate = _request_locator(members, just_row)
        if len(ctx.errors) == before and org_id is not None and site_id is not None:
            header = {"site_id": site_id, "justification": justification, "lines": lines, "organization_id": org_id}
            body = ctx.validate(RequestCreate, header, locate)
            if body is not None:
                requester = ctx.on_behalf("requester", org_id)
                write = partial(requests.create_request, ctx.session, actor=requester, data=body)
                created += ctx.attempt(write, locate) is not None
        ctx.advance(len(members))
    return created


STAFF = ("admin", "logistics")
KINDS: dict[str, KindSpec] = {
    "organizations": KindSpec(
        "organizations", ("name", "kind", "region"), ("equity_weight",), ("id", "active"), ("admin",), _organizations
    ),
    "sites": KindSpec(
        "sites",
        ("organization", "name", "kind", "lat", "lon"),
        ("address",),
        ("id", "organization_id", "active"),
        STAFF,
        _sites,
    ),
    "items": KindSpec(
        "items",
        ("sku", "name", "category"),
        ("unit", "pack_size", "shelf_life_days", "substitutes"),
        ("id", "active"),
        STAFF,
        _items,
    ),
    "inventory": KindSpec(
        "inventory",
        ("site", "sku", "quantity"),
        ("lot_code", "expires_at", "reason"),
        ("lot_id", "site_id", "item_id", "reserved", "available"),
        ("logistics",),
        _inventory,
    ),
    "requests": KindSpec(
        "requests",
        ("request_key", "organization", "site", "sku", "quantity"),
        ("priority", "needed_by", "justification"),
        (
            "request_id",
            "line_id",
            "status",
            "quantity_reserved",
            "quantity_in_transit",
            "quantity_delivered",
            "remaining",
            "created_at",
        ),
        ("logistics",),
        _requests,
    ),
    "pledges": KindSpec(
        "pledges",
        ("organization", "site", "sku", "quantity"),
        ("available_from", "expires_at", "note", "status"),
        ("id", "committed", "received_quantity", "received_lot_id", "created_at"),
        ("logistics",),
        _pledges,
    ),
}
