"""Idempotency-Key on writes (IETF httpapi idempotency-key draft), as pure ASGI middleware.

A write under /v1 that carries `Idempotency-Key` is run at most once per (API key, Idempotency-Key):

- the first request reserves the key in its own committed transaction, runs, and its answer (status,
  headers such as Location and ETag, body) is stored — 4xx answers included, as the draft says;
- a retry with the same method, path, query and body gets the stored answer again, with
  `Idempotent-Replayed: true`, and nothing runs a second time;
- the same key with a different request → 422 (field `Idempotency-Key`); a retry while the first is
  still running → 409 with `Retry-After`;
- a 5xx, a crash or a streamed answer releases the reservation, so a retry runs afresh; a reservation
  whose process died (no heartbeat for `idempotency_stale_seconds`) is taken over by the next retry;
- keys belong to the API key that sent them and expire after `idempotency_ttl_seconds` (24 h).

Requests without a valid API key are passed through untouched: the route answers 401.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem, validation_problem
from app.idempotency import service
from app.idempotency.service import Decision, StoredAnswer
from app.principal import bearer_token

log = logging.getLogger("app.idempotency")

HEADER = "Idempotency-Key"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PREFIX = "/v1/"
# The answer to creating an API key holds its secret, which is shown once and never stored (only its hash).
# Storing the answer for a replay would keep the secret in the database, so these paths refuse the header.
NOT_SUPPORTED = frozenset({("POST", "/v1/api-keys")})
MAX_KEY_LENGTH = 255
# Headers of the first answer that describe that exchange, not the resource: never replayed.
_NOT_STORED = frozenset({"content-length", "date", "server", "x-request-id", "set-cookie", "connection"})
_PURGE_EVERY_S = 60.0


def applies_to(method: str, path: str) -> bool:
    return method in WRITE_METHODS and path.startswith(PREFIX)


def parse_key(raw: str) -> str | None:
    """The key as sent (the draft's quoted form `"…"` and a bare token are both fine; a client always
    sends the same form), or None when empty, too long, or not printable ASCII."""
    value = raw.strip(" \t")  # surrounding whitespace is not part of a header value (RFC 9110 §5.5)
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in value):
        return None
    return value


class IdempotencyMiddleware:
    """Reads the engine and settings from the app (`app.state`) at request time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._last_purge = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not applies_to(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        raw_key = headers.get(HEADER)
        token = bearer_token(headers.get("authorization"))
        if raw_key is None or token is None:  # without a key there is nothing to do; without auth → 401
            await self.app(scope, receive, send)
            return
        key = parse_key(raw_key)
        if key is None or (scope["method"], scope["path"].rstrip("/")) in NOT_SUPPORTED:
            message = (
                f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
                if key is None
                else "not supported here: the answer holds a secret that is never stored"
            )
            await validation_problem([{"field": HEADER, "message": message}], scope["path"])(scope, receive, send)
            return

        body = await _read_body(receive)
        if body is None:  # the client went away before sending its body
            return
        replay_receive = _replaying(body, receive)
        state = scope["app"].state
        engine, settings = state.engine, state.settings
        api_key_id = await run_in_threadpool(service.key_id_for, engine, token)
        if api_key_id is None:
            await self.app(scope, replay_receive, send)
            return
        await self._purge_now_and_then(engine, settings.idempotency_ttl_seconds)
        decision = await run_in_threadpool(
            lambda: service.reserve(
                engine,
                api_key_id=api_key_id,
                key=key,
                fingerprint=service.fingerprint(
                    scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"), body
                ),
                ttl_s=settings.idempotency_ttl_seconds,
                stale_s=settings.idempotency_stale_seconds,
            )
        )
        if decision.action == "run":
            assert decision.reservation_id is not None
            await self._run(scope, replay_receive, send, engine, decision.reservation_id, settings)
        else:
            await _answer_without_running(decision, scope, receive, send)

    async def _purge_now_and_then(self, engine: Any, ttl_s: float) -> None:
        """Expired keys are deleted lazily, at most once a minute per process."""
        now = anyio.current_time()
        if now - self._last_purge < _PURGE_EVERY_S:
            return
        self._last_purge = now
        try:
            await run_in_threadpool(service.purge_expired, engine, ttl_s=ttl_s)
        except Exception:  # noqa: BLE001  (housekeeping must never fail a request)
            log.warning("purging expired idempotency keys failed", exc_info=True)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, engine: Any, reservation_id: int, settings: Any
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        streaming = False

        async def capture(message: Message) -> None:
            nonlocal start, streaming
            if streaming:
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
                if Headers(raw=message.get("headers", [])).get("content-type", "").startswith("text/event-stream"):
                    streaming = True  # a stream is not an answer that can be stored and replayed
                    await _shielded(service.release, engine, reservation_id)
                    await send(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            else:
                await send(message)

        failure: BaseException | None = None
        try:
            async with anyio.create_task_group() as heartbeats:
                heartbeats.start_soon(_beat, engine, reservation_id, settings.idempotency_stale_seconds / 4)
                try:
                    await self.app(scope, receive, capture)
                except BaseException as exc:  # noqa: BLE001  (re-raised below, outside the task group, unwrapped)
                    failure = exc
                finally:
                    heartbeats.cancel_scope.cancel()
        except BaseException:  # cancelled from outside while leaving the task group
            await _shielded(service.release, engine, reservation_id)
            raise
        if failure is not None:
            await _shielded(service.release, engine, reservation_id)
            raise failure
        if streaming:
            return
        if start is None:
            await _shielded(service.release, engine, reservation_id)
            return
        body = b"".join(chunks)
        status = int(start["status"])
        try:
            if status >= 500:
                await _shielded(service.release, engine, reservation_id)
            else:
                answer = StoredAnswer(status=status, headers=_storable(start), body=body)
                await _shielded(service.complete, engine, reservation_id, answer)
        except Exception:  # noqa: BLE001  (the request itself succeeded; its answer must still reach the client)
            log.error("could not store the answer for idempotency reservation %s", reservation_id, exc_info=True)
        await send(start)
        await send({"type": "http.response.body", "body": body})


async def _answer_without_running(decision: Decision, scope: Scope, receive: Receive, send: Send) -> None:
    if decision.action == "replay":
        assert decision.answer is not None
        await _replay(decision.answer, send)
    elif decision.action == "mismatch":
        message = "this key was already used for a different request (method, path or body)"
        await validation_problem([{"field": HEADER, "message": message}], scope["path"])(scope, receive, send)
    else:
        response = problem(
            409,
            "Request in progress",
            "a request with this Idempotency-Key is still being processed; retry later",
            slug="idempotency-in-progress",
            instance=scope["path"],
            field=HEADER,
        )
        response.headers["Retry-After"] = "1"
        await response(scope, receive, send)


async def _replay(answer: StoredAnswer, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    headers += [(b"content-length", str(len(answer.body)).encode()), (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def _storable(start: Message) -> list[tuple[str, str]]:
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in start.get("headers", [])
        if k.decode("latin-1").lower() not in _NOT_STORED
    ]


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the already-read body, then waits for the disconnect as usual."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _beat(engine: Any, reservation_id: int, every_s: float) -> None:
    """Keep a long request's reservation fresh, so it is never mistaken for an abandoned one."""
    while True:
        await anyio.sleep(every_s)
        try:
            await run_in_threadpool(service.heartbeat, engine, reservation_id)
        except Exception:  # noqa: BLE001  (a missed beat only risks an early takeover after stale_s)
            log.warning("idempotency heartbeat failed for reservation %s", reservation_id, exc_info=True)


async def _shielded(fn: Any, *args: Any) -> None:
    """Bookkeeping that must finish even when the request task is being cancelled."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(fn, *args)
