"""Health checks and Prometheus metrics: outside /v1, no API key (the metrics token is optional)."""

from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import inspect, text

from app.deps import public
from app.errors import PROBLEM_MEDIA_TYPE, ServiceUnavailable, Unauthorized
from app.migrate import head_revision

router = APIRouter(tags=["operations"])


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


@router.get("/healthz", summary="Liveness: the process answers (no database access)")
@public
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its schema is at the latest migration",
    responses={503: _problem("database unreachable or not migrated")},
)
@public
def readyz(request: Request) -> dict[str, str]:
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            # Read directly rather than through Alembic's MigrationContext, which logs on every probe.
            migrated = inspect(conn).has_table("alembic_version")
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() if migrated else []
    except Exception as exc:  # noqa: BLE001  (any database failure means not ready)
        raise ServiceUnavailable("database unreachable") from exc
    if current != [_head()]:
        raise ServiceUnavailable("database schema is not at the latest migration")
    return {"status": "ready"}


@lru_cache(maxsize=1)
def _head() -> str | None:
    return head_revision()


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
        401: _problem("CRISIS_METRICS_TOKEN is set and the request did not send it as a bearer token"),
    },
)
@public
def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    expected = token.get_secret_value().encode() if token is not None else b""
    if expected:  # an empty CRISIS_METRICS_TOKEN (as docker-compose.yml passes by default) means none
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected):
            raise Unauthorized("send 'Authorization: Bearer <metrics token>' (CRISIS_METRICS_TOKEN)")
    body, content_type = request.app.state.metrics.render(request.headers.get("accept"))
    return Response(content=body, media_type=content_type)
