"""Pure ASGI middleware: request ids and request body size limits (413 before the body is parsed)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.context import request_id_var
from app.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE


def request_id_from(incoming: bytes | None) -> str:
    """The client's X-Request-ID when it is a sensible one (printable, ≤ 64 characters), else a new id."""
    text = (incoming or b"").decode("latin-1")
    return text if 0 < len(text) <= 64 and text.isprintable() else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(dict(scope["headers"]).get(b"x-request-id"))
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Rejects bodies over the limit with 413 problem+json; larger limits for import paths."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, import_max_bytes: int, import_prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes
        self.import_prefixes = import_prefixes

    def _limit(self, path: str) -> int:
        return self.import_max_bytes if path.startswith(self.import_prefixes) else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit)
            return
        received = 0
        response_started = False
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if too_large:
                # The app caught _TooLarge while reading (FastAPI answers 400 "error parsing the body"):
                # whatever it answers instead, the answer is 413.
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await _send_413(send, limit)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await _send_413(send, limit)


async def _send_413(send: Send, limit: int) -> None:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + "payload-too-large",
        "title": "Request body too large",
        "status": 413,
        "detail": f"request body exceeds {limit} bytes",
    }
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(raw)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class ConditionalGetMiddleware:
    """GET/HEAD with an If-None-Match that matches the response's ETag → 304 without a body.

    One place for every versioned resource: routes only need to set `ETag`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        inm = dict(scope["headers"]).get(b"if-none-match")
        if not inm:
            await self.app(scope, receive, send)
            return
        wanted = {t.strip().removeprefix("W/") for t in inm.decode("latin-1").split(",")}
        suppressed = False

        async def conditional_send(message: Message) -> None:
            nonlocal suppressed
            if message["type"] == "http.response.start" and message["status"] == 200:
                headers = dict(message.get("headers", []))
                etag = headers.get(b"etag", b"").decode("latin-1").removeprefix("W/")
                if etag and (etag in wanted or "*" in wanted):
                    suppressed = True
                    keep = [(k, v) for k, v in message.get("headers", []) if k.lower() in _KEEP_ON_304]
                    await send({"type": "http.response.start", "status": 304, "headers": keep})
                    await send({"type": "http.response.body", "body": b""})
                    return
            if suppressed:
                return
            await send(message)

        await self.app(scope, receive, conditional_send)


_KEEP_ON_304 = {b"etag", b"cache-control", b"vary", b"x-request-id", b"date", b"expires", b"content-location"}


class DatabaseConcurrencyMiddleware:
    """Caps requests in flight at the connection pool's capacity, waiting on the event loop.

    A request holds its pooled connection across the thread hops of its dependencies and endpoint.
    With more requests than connections, every worker thread can end up blocked waiting for a
    connection while the requests that hold connections wait for a thread: nothing moves until the
    pool times out (seen with ~60 concurrent clients on one process). Queuing here, before any thread
    or connection is taken, removes that cycle. Streams that wait for long periods (Server-Sent Events,
    long-polls with `wait=`) take short transactions of their own and are not counted.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = max(1, limit)
        self._semaphore: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _long_lived(scope):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:  # created lazily inside the running event loop
            import asyncio

            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)


def _long_lived(scope: Scope) -> bool:
    path: str = scope["path"]
    return path.endswith("/events") and scope["method"] == "GET" or b"wait=" in scope.get("query_string", b"")
