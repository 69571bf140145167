"""The dashboard's signed session cookie: who is signed in, a CSRF token, one-shot flash messages.

The cookie holds the SHA-256 of the API key (what the `api_keys` table stores), never the key itself:
a copied cookie cannot be replayed against the JSON API, and every page looks the key up again, so a
revoked key is signed out on its next click. The cookie is signed (itsdangerous) with a timestamp and
expires after `MAX_AGE_S`; it is HttpOnly and SameSite=Lax, Secure when the page was served over HTTPS.

The signing secret comes from `CRISIS_SESSION_SECRET`; without it one is generated on first use into
`<data dir>/session-secret` (mode 0600) — right for `make run` and one machine; API replicas on several
machines must share `CRISIS_SESSION_SECRET`.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings

COOKIE_NAME = "cs_dashboard"
MAX_AGE_S = 12 * 3600
SECRET_FILE = "session-secret"
SALT = "crisis-supply.dashboard.session"
CSRF_FIELD = "csrf_token"

_secret_lock = threading.Lock()
_secret_cache: dict[Path, str] = {}


def _file_secret(path: Path) -> str:
    """Read the secret file, creating it (exclusively, mode 0600) on first use."""
    with _secret_lock:
        cached = _secret_cache.get(path)
        if cached:
            return cached
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = path.read_text().strip()
        else:
            value = secrets.token_urlsafe(48)
            with os.fdopen(fd, "w") as fh:
                fh.write(value + "\n")
        if len(value) < 32:
            raise RuntimeError(f"{path} holds a session secret shorter than 32 characters")
        _secret_cache[path] = value
        return value


def session_secret(settings: Settings) -> str:
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    return _file_secret((settings.data_dir / SECRET_FILE).resolve())


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(session_secret(settings), salt=SALT)


@dataclass
class DashboardSession:
    """The decoded cookie. `changed` makes the route write it back on the way out."""

    key_hash: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    flashes: list[tuple[str, str]] = field(default_factory=list)
    changed: bool = False
    cleared: bool = False

    def flash(self, kind: str, message: str) -> None:
        self.flashes.append((kind, message))
        self.changed = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        if out:
            self.changed = True
        return out

    def sign_in(self, key_hash: str) -> None:
        # A fresh CSRF token per sign-in: a token seen before signing in is worth nothing after.
        self.key_hash, self.csrf, self.changed, self.cleared = key_hash, secrets.token_urlsafe(24), True, False

    def sign_out(self) -> None:
        self.key_hash, self.flashes, self.changed, self.cleared = None, [], True, True

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(), str(given).encode())

    def dump(self) -> dict[str, Any]:
        return {"k": self.key_hash, "c": self.csrf, "f": [list(f) for f in self.flashes]}


def load(request: Request, settings: Settings) -> DashboardSession:
    """The session from the cookie; a new one (to be written) when absent, tampered with or expired."""
    raw = request.cookies.get(COOKIE_NAME)
    if raw:
        try:
            data = _serializer(settings).loads(raw, max_age=MAX_AGE_S)
        except BadSignature:
            data = None
        if isinstance(data, dict) and isinstance(data.get("c"), str):
            flashes = [(str(k), str(m)) for k, m in data.get("f") or [] if k and m]
            key_hash = data.get("k") if isinstance(data.get("k"), str) else None
            return DashboardSession(key_hash=key_hash, csrf=data["c"], flashes=flashes)
    return DashboardSession(changed=True)


def save(request: Request, response: Response, settings: Settings, sess: DashboardSession) -> None:
    if not sess.changed:
        return
    if sess.cleared and not sess.flashes:
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
        return
    response.set_cookie(
        COOKIE_NAME,
        _serializer(settings).dumps(sess.dump()),
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
