"""Sites: places with coordinates owned by an organisation. Only depot stock is allocatable."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

from app.errors import Unprocessable
from app.sites.models import Site


def get_for_reference(
    session: Session,
    site_id: int,
    *,
    field: str,
    organization_id: int | None = None,
    kinds: Iterable[str] | None = None,
) -> Site:
    """A site named in another record's body. Unknown, inactive, another organisation's (when
    `organization_id` is given) or of the wrong kind is a 422 naming `field` — never a hint that a
    foreign site exists."""
    site = session.get(Site, site_id)
    if site is None or (organization_id is not None and site.organization_id != organization_id):
        raise Unprocessable(f"site {site_id} does not exist", field=field)
    if not site.active:
        raise Unprocessable(f"site {site_id} is inactive", field=field)
    allowed = tuple(kinds) if kinds is not None else None
    if allowed is not None and site.kind not in allowed:
        raise Unprocessable(f"site {site_id} is a {site.kind}; expected {' or '.join(allowed)}", field=field)
    return site
