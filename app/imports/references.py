"""Rows name other records the way people do: organisations and sites by name (or id), items by SKU.

A name resolves to an id here; whether that record may be used (active, the right kind, the right
owner) is still the domain service's decision, so those rules are not repeated.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select

from app.imports.parsers import Row
from app.imports.service import REQUIRED, Context, as_text
from app.items import service as items
from app.organizations.models import Organization
from app.sites.models import Site


def organization(ctx: Context, row: Row, column: str) -> int | None:
    """By exact name; a number that is no organisation's name is taken as an id."""
    value = as_text(row.get(column))
    if value is None:
        ctx.fail(row.number, column, REQUIRED)
        return None
    found = ctx.session.exec(select(Organization.id).where(Organization.name == value)).first()
    if found is None and value.isdigit() and ctx.session.get(Organization, int(value)) is not None:
        found = int(value)
    if found is None:
        ctx.fail(row.number, column, f"no organization named {value!r}")
    return found


def site(
    ctx: Context, row: Row, column: str, *, kinds: Sequence[str], organization_id: int | None = None
) -> int | None:
    """By name among the sites of the expected kinds (and owner, when given); names are not unique,
    so a name shared by several such sites must be replaced by the site's id."""
    value = as_text(row.get(column))
    if value is None:
        ctx.fail(row.number, column, REQUIRED)
        return None
    stmt = select(Site.id).where(Site.name == value, col(Site.kind).in_(list(kinds)))
    if organization_id is not None:
        stmt = stmt.where(Site.organization_id == organization_id)
    ids = list(ctx.session.exec(stmt.order_by(col(Site.id))).all())
    if len(ids) == 1:
        return ids[0]
    if len(ids) > 1:
        ctx.fail(row.number, column, f"{len(ids)} sites are named {value!r}; give the site's id instead")
        return None
    if value.isdigit():
        return int(value)  # the service checks existence, kind and owner, as for an API body
    owner = " of that organization" if organization_id is not None else ""
    ctx.fail(row.number, column, f"no {' or '.join(kinds)} site named {value!r}{owner}")
    return None


def item(ctx: Context, row: Row, column: str) -> int | None:
    value = as_text(row.get(column))
    if value is None:
        ctx.fail(row.number, column, REQUIRED)
        return None
    found = items.get_by_sku(ctx.session, value)
    if found is None:
        ctx.fail(row.number, column, f"no item with SKU {value!r}")
        return None
    return found.id
