"""The web dashboard at `/`: sign-in with an API key, role home pages, static assets.

The pages themselves live in `logistics`, `plans` and `members`; this module gathers them into the one
`router` that `app.main` includes. None of these routes is part of the JSON API (/v1) or its schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from app.dashboard import logistics, members, plans
from app.dashboard.web import (
    CookieDep,
    DashboardRoute,
    FormDep,
    home_for,
    key_for_hash,
    redirect,
    render,
)
from app.deps import SessionDep
from app.keys.service import authenticate, hash_key

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".txt": "text/plain"}
STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in STATIC_TYPES}

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


def _safe_next(target: str | None, fallback: str) -> str:
    """Only a path on this site (never `//host` or a scheme): no open redirect through the login form."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


@router.get("/")
def index(session: SessionDep, sess: CookieDep) -> Response:
    key = key_for_hash(session, sess.key_hash) if sess.key_hash else None
    return redirect(home_for(key.role) if key is not None else "/login")


@router.get("/login")
def login_page(request: Request, session: SessionDep, sess: CookieDep, next: str | None = None) -> Response:
    key = key_for_hash(session, sess.key_hash) if sess.key_hash else None
    if key is not None:
        return redirect(_safe_next(next, home_for(key.role)))
    sess.changed = True  # make sure the CSRF token the form carries is in a cookie
    return render(request, "login.html", None, next=_safe_next(next, ""), error=None)


@router.post("/login")
def login(request: Request, session: SessionDep, sess: CookieDep, form: FormDep) -> Response:
    secret = str(form.get("api_key") or "").strip()
    target = str(form.get("next") or "")
    key = authenticate(session, secret) if secret else None
    if key is None:
        # 401 also feeds the per-address failed-authentication limit (app.ratelimit): no brute force.
        error = "Enter your API key." if not secret else "That API key is unknown or has been revoked."
        return render(request, "login.html", None, status=401, next=_safe_next(target, ""), error=error)
    sess.sign_in(hash_key(secret))
    sess.flash("ok", f"Signed in as {key.name} ({key.role}).")
    return redirect(_safe_next(target, home_for(key.role)))


@router.post("/logout")
def logout(sess: CookieDep, form: FormDep) -> Response:
    del form  # checked for its CSRF token only
    sess.sign_out()
    sess.flash("ok", "Signed out.")
    return redirect("/login")


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC_FILES.get(name)
    if path is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=3600"})


for module in (logistics, plans, members):
    router.include_router(module.router)
