"""Pure ASGI middleware: per-request metrics and JSON log line, 500s without internals, security headers."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.context import request_id_var
from app.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, database_unavailable, unavailable_problem
from app.operations.logging import bind_fields, get_logger
from app.operations.metrics import UNMATCHED_ROUTE, RequestMetrics

access_log = get_logger("app.access")
error_log = get_logger("app.error")


def route_template(scope: Scope) -> str:
    """The matched route's path format (`/v1/requests/{request_id}`), never the raw path: bounded labels."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Times every HTTP request, records it in the app's request metrics and logs one line for it.

    An exception that escapes the app becomes a 500 problem+json here — generic text, the request id
    to quote, no stack trace or SQL — so the response still passes through the request-id, CORS and
    security-header middleware. The traceback goes to the log only.
    """

    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if database_unavailable(exc) and not response_started:
                # Raised by a middleware (e.g. the idempotency reservation) while the database is down.
                error_log.warning("database unavailable", method=scope["method"], path=scope["path"])
                status = 503
                await unavailable_problem(scope["path"])(scope, receive, send)
                return
            error_log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if response_started:
                raise  # too late for an error response; the server closes the connection
            status = 500
            await _send_500(send, scope["path"])
        except BaseException:
            if not response_started:
                status = 499  # the client went away (cancelled) before an answer: nginx's convention
            raise
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            self.metrics.observe(scope["method"], route, status, seconds)
            fields: dict[str, Any] = {}
            principal = state.get("principal")
            bind_fields(
                fields,
                key_id=getattr(principal, "key_id", None),
                role=getattr(principal, "role", None),
                organization_id=getattr(principal, "organization_id", None),
            )
            log = access_log.warning if status >= 500 else access_log.info
            log(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                **fields,
            )


async def _send_500(send: Send, path: str) -> None:
    body = {
        "type": PROBLEM_BASE + "internal",
        "title": "Internal error",
        "status": 500,
        "detail": "An unexpected error occurred; quote the request id when reporting it.",
        "instance": path,
        "request_id": request_id_var.get(),
    }
    raw = json.dumps(body).encode()
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


# Pages of our own (API answers, the future dashboard with vendored assets): same origin only.
# Inline styles stay allowed because chart and map code commonly injects <style> elements; scripts do not.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# /docs and /redoc: FastAPI's pages load Swagger UI / ReDoc from jsDelivr and start them with an
# inline script, so these pages (and only these) allow that CDN and inline code.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# API answers carry private coalition data: no shared or browser cache keeps them unless a route says so.
NO_STORE_PREFIXES = ("/v1/", "/fhir/", "/metrics")


class SecurityHeadersMiddleware:
    """Adds the security headers to every response unless the route already set that header."""

    def __init__(self, app: ASGIApp, *, docs_paths: tuple[str, ...]) -> None:
        self.app = app
        self.docs_paths = frozenset(p for p in docs_paths if p)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = DOCS_CSP if path in self.docs_paths else DEFAULT_CSP
        extra = [*ALWAYS, (b"content-security-policy", csp.encode())]
        if path.startswith(NO_STORE_PREFIXES) or path == "/v1":
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
