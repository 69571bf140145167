"""Dashboard plumbing: the route class, who is signed in, role checks, CSRF-checked forms, rendering.

Pages are server-rendered and call the domain services directly with the signed-in key's Principal,
so a page can never show or do more than the same key could through the JSON API. Role rights are
declared per page with `allow(...)`, mirroring the API routes' `Allow(...)` (SPEC §1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, select
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from app.config import Settings
from app.dashboard import session as cookie
from app.deps import SessionDep
from app.errors import DomainError, NotFound
from app.keys.models import ApiKey
from app.organizations.models import Organization
from app.principal import Principal

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
T = TypeVar("T")
MAX_ROWS = 10_000  # a page never pulls more rows than this from one list

# (path, label) per role, in menu order; the first entry is the role's home page.
NAV: dict[str, list[tuple[str, str]]] = {
    "logistics": [("/gaps", "Gaps"), ("/map", "Map"), ("/runs", "Runs"), ("/shipments", "Shipments")],
    "admin": [
        ("/admin", "Organisations & keys"),
        ("/gaps", "Gaps"),
        ("/map", "Map"),
        ("/runs", "Runs"),
        ("/shipments", "Shipments"),
    ],
    "requester": [("/requests", "My requests"), ("/requests/new", "New request"), ("/usage", "Usage reports")],
    "donor": [("/pledges", "My pledges")],
    "driver": [("/driver", "My shipments")],
}


class LoginRequired(Exception):
    pass


class PageDenied(Exception):
    pass


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def cookie_session(request: Request) -> cookie.DashboardSession:
    existing = getattr(request.state, "dash_session", None)
    if existing is None:
        existing = cookie.load(request, settings_of(request))
        request.state.dash_session = existing
    return existing  # type: ignore[no-any-return]


CookieDep = Annotated[cookie.DashboardSession, Depends(cookie_session)]


@dataclass(frozen=True)
class Viewer:
    """The signed-in key, as the services see it (`principal`), plus what the header shows."""

    principal: Principal
    organization: Organization | None
    sess: cookie.DashboardSession

    @property
    def role(self) -> str:
        return self.principal.role


def key_for_hash(session: Session, key_hash: str) -> ApiKey | None:
    """Same rule as `app.keys.service.authenticate`, from the stored hash: unknown or revoked → None."""
    key = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
    return key if key is not None and key.revoked_at is None else None


def signed_in(request: Request, session: SessionDep, sess: CookieDep) -> Viewer:
    key = key_for_hash(session, sess.key_hash) if sess.key_hash else None
    if key is None:
        if sess.key_hash:  # revoked since sign-in
            sess.sign_out()
            sess.flash("error", "Your API key is no longer valid; sign in again.")
        raise LoginRequired
    principal = Principal(key_id=key.id, name=key.name, role=key.role, organization_id=key.organization_id)
    request.state.principal = principal  # the request log names the caller, as for API calls
    org = session.get(Organization, key.organization_id) if key.organization_id is not None else None
    viewer = Viewer(principal=principal, organization=org, sess=sess)
    request.state.dash_viewer = viewer  # error pages keep the header and menu
    return viewer


def allow(*roles: str) -> Any:
    """Dependency: the signed-in viewer when its role is one of `roles`, else a 403 page."""

    def check(viewer: Annotated[Viewer, Depends(signed_in)]) -> Viewer:
        if viewer.role not in roles:
            raise PageDenied(f"The {viewer.role} role cannot open this page.")
        return viewer

    return Depends(check)


async def posted_form(request: Request, sess: CookieDep) -> FormData:
    """The form body, after the CSRF check (the token every dashboard form carries)."""
    form = await request.form()
    given = form.get(cookie.CSRF_FIELD)
    if not sess.csrf_ok(given if isinstance(given, str) else None):
        raise PageDenied("The form has expired or did not come from this dashboard. Reload the page and try again.")
    return form


FormDep = Annotated[FormData, Depends(posted_form)]


def home_for(role: str) -> str:
    return NAV.get(role, [("/login", "")])[0][0]


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def render(request: Request, template: str, viewer: Viewer | None, status: int = 200, **context: Any) -> Response:
    sess = viewer.sess if viewer is not None else cookie_session(request)
    nav = NAV.get(viewer.role, []) if viewer else []
    path = request.url.path
    matches = [href for href, _ in nav if path == href or path.startswith(href + "/")]
    base = {
        "viewer": viewer,
        "nav": nav,
        "current": max(matches, key=len, default=None),
        "path": path,
        "flashes": sess.pop_flashes(),
        "csrf_field": cookie.CSRF_FIELD,
        "csrf_token": sess.csrf,
    }
    return TEMPLATES.TemplateResponse(request, template, base | context, status_code=status)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    viewer = getattr(request.state, "dash_viewer", None)
    return render(request, "error.html", viewer, status=status, title=title, message=message)


class DashboardRoute(APIRoute):
    """Turns sign-in redirects, refusals and missing objects into pages, and writes the session cookie."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = redirect("/login" + (f"?next={quote(target)}" if request.method == "GET" else ""))
            except PageDenied as exc:
                response = _error_page(request, 403, "Not allowed", str(exc))
            except NotFound as exc:
                response = _error_page(request, 404, "Not found", exc.detail)
            except DomainError as exc:  # anything a page did not handle itself
                response = _error_page(request, exc.status, exc.title, exc.detail)
            sess = getattr(request.state, "dash_session", None)
            if sess is not None:
                cookie.save(request, response, settings_of(request), sess)
            # Pages show private coalition data: never cached by the browser or a proxy.
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler


# ---------------------------------------------------------------- helpers for pages


def all_pages(fetch: Callable[..., Any], **kwargs: Any) -> list[Any]:
    """Every row of a paginated service list (bounded by MAX_ROWS)."""
    rows: list[Any] = []
    cursor: str | None = None
    while len(rows) < MAX_ROWS:
        page = fetch(limit=500, cursor=cursor, **kwargs)
        rows.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            break
    return rows


def by_id(rows: Iterable[T]) -> dict[int, T]:
    return {row.id: row for row in rows}  # type: ignore[attr-defined]


def error_message(exc: DomainError) -> str:
    return f"{exc.title}: {exc.detail}" if exc.status != 422 else exc.detail


def fmt_int(value: Any) -> str:
    if value is None:
        return "–"
    return f"{int(round(float(value))):,}"


def fmt_pct(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.0f}%"


def fmt_num(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{float(value):,.{digits}f}"


def fmt_dt(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _words(name: str) -> str:
    return name.removesuffix("_id").replace("_", " ").replace(".", " ")


def field_label(path: str) -> str:
    """An API field path as a person reads it: 'lines[0].quantity' → 'Line 1: quantity'."""
    match = re.fullmatch(r"lines\[(\d+)\]\.?(.*)", path)
    if match:
        rest = match.group(2)
        return f"Line {int(match.group(1)) + 1}" + (f": {_words(rest)}" if rest else "")
    return _words(path)


TEMPLATES.env.filters.update(fint=fmt_int, pct=fmt_pct, num=fmt_num, dt=fmt_dt)
TEMPLATES.env.globals.update(label=lambda s: str(s or "").replace("_", " "), field_label=field_label)
