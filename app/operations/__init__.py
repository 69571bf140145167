"""Operations: metrics, structured logs, health checks, security headers, CORS, backup and restore.

`install(app, settings)` is called by `create_app` just before the request-id middleware is added,
so the middleware added here runs inside it (the request id is known) — from outside in:
request id → CORS (only when configured) → security headers → metrics and request log → the rest.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.config import Settings

CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSED_HEADERS = ["ETag", "Location", "Retry-After", "X-Request-ID"]


def install(app: FastAPI, settings: Settings) -> None:
    from app.operations.logging import configure_logging
    from app.operations.metrics import Metrics
    from app.operations.middleware import ObservabilityMiddleware, SecurityHeadersMiddleware

    configure_logging(settings.log_level)
    app.state.metrics = Metrics(app.state.engine)
    # add_middleware puts each new one outside the previous ones.
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics.requests)
    docs_paths = tuple(p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p)
    app.add_middleware(SecurityHeadersMiddleware, docs_paths=docs_paths)
    origins = settings.cors_origin_list
    if origins:
        # API keys travel in the Authorization header, never in cookies: no credentialed CORS.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            allow_credentials=False,
            max_age=600,
        )
