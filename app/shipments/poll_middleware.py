"""The outermost middleware: `GET /v1/shipments/{id}` polls that change nothing, answered 304 from memory.

A hit (same key, same shipment, the ETag it already holds, cache fresh — see poll_cache) is answered
here with the same headers the full route's 304 carries (ETag, X-Request-ID, security headers,
`Cache-Control: no-store`), counted in the request metrics under the route's template and in the
key's read rate limit. Hits are not written to the access log: they would be nearly all of it
(`crisis_shipment_poll_cache_hits_total` counts them). Everything else — misses, other routes, other
methods, browsers sending `Origin` (CORS stays with its own middleware) — goes through the full app,
and a 200/304 from the shipment route teaches the cache what the key may see.
"""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import etag_matches
from app.keys.service import hash_key
from app.middleware import request_id_from
from app.operations.metrics import RequestMetrics
from app.operations.middleware import ALWAYS, DEFAULT_CSP
from app.principal import bearer_token
from app.ratelimit import RateLimiter
from app.shipments.poll_cache import ShipmentPollCache

ROUTE = "/v1/shipments/{shipment_id}"
_PATH = re.compile(r"/v1/shipments/([1-9][0-9]{0,17})")
_STATIC_304_HEADERS = [
    *ALWAYS,
    (b"content-security-policy", DEFAULT_CSP.encode()),
    (b"cache-control", b"no-store"),
]


class ShipmentPollMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: ShipmentPollCache,
        reads: RateLimiter,
        metrics: RequestMetrics,
    ) -> None:
        self.app = app
        self.cache = cache
        self.reads = reads
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not self.cache.settings.enabled:
            await self.app(scope, receive, send)
            return
        matched = _PATH.fullmatch(scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if_none_match = authorization = request_id = None
        browser = False
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"origin":
                browser = True
        token = bearer_token(authorization.decode("latin-1") if authorization else None)
        if token is None:
            await self.app(scope, receive, send)
            return
        key_hash = hash_key(token)
        shipment_id = int(matched.group(1))
        if if_none_match is not None and not browser:
            etag = self.cache.lookup(key_hash, shipment_id)
            if (
                etag is not None
                and etag_matches(if_none_match.decode("latin-1"), etag)
                and (not self.reads.enabled or self.reads.take(key_hash) is None)  # over the limit: full route
            ):
                await self._not_modified(send, etag, request_id)
                self.cache.hits += 1
                self.metrics.poll_cache_hits.inc()
                self.metrics.observe("GET", ROUTE, 304, time.perf_counter() - started)
                return
        await self._through_app(scope, receive, send, key_hash, shipment_id)

    async def _through_app(self, scope: Scope, receive: Receive, send: Send, key_hash: str, shipment_id: int) -> None:
        generation = self.cache.generation  # before the route reads anything
        answered: list[str] = []

        async def watching_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (200, 304):
                for name, value in message.get("headers", []):
                    if name.lower() == b"etag":
                        answered.append(value.decode("latin-1"))
            await send(message)

        await self.app(scope, receive, watching_send)
        # The route set state.principal only after authenticating this very key; a 200/304 with an ETag
        # means the key could see the shipment at that version.
        if answered and scope.get("state", {}).get("principal") is not None:
            self.cache.store(key_hash, shipment_id, answered[0], generation)

    @staticmethod
    async def _not_modified(send: Send, etag: str, request_id: bytes | None) -> None:
        rid = request_id_from(request_id).encode("latin-1")
        headers = [(b"etag", etag.encode("latin-1")), (b"x-request-id", rid), *_STATIC_304_HEADERS]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
