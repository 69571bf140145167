"""create_app(): routers, middleware, problem+json handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from app.config import Settings, get_settings
from app.db import get_engine, make_engine
from app.errors import install_error_handlers
from app.idempotency import openapi as idempotency_openapi
from app.idempotency.middleware import IdempotencyMiddleware
from app.middleware import (
    BodyLimitMiddleware,
    ConditionalGetMiddleware,
    DatabaseConcurrencyMiddleware,
    RequestIdMiddleware,
)
from app.openapi import install_openapi
from app.operations import install as install_operations
from app.ratelimit import RateLimitMiddleware, RateLimits
from app.shipments.poll_cache import PollCacheSettings, ShipmentPollCache
from app.shipments.poll_middleware import ShipmentPollMiddleware

# Every domain with an HTTP surface; each module exposes `router`.
DOMAIN_ROUTERS = (
    # Shipments first: drivers' phones poll them most, and routes are matched in order.
    "app.shipments.router",
    "app.organizations.router",
    "app.sites.router",
    "app.items.router",
    "app.inventory.router",
    "app.requests.router",
    "app.pledges.router",
    "app.usage.router",
    "app.keys.router",
    "app.audit.router",
    "app.allocation.router",
    "app.allocation.plans_router",
    "app.reports.router",
    "app.imports.router",
    "app.fhir.router",
    "app.operations.router",
    "app.dashboard.router",  # the web dashboard at / (not part of the /v1 API or its schema)
)
IMPORT_PREFIXES = ("/v1/imports",)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # SQLite mode: solves run in a child worker process started here (see app.allocation.embedded).
    from app.allocation.embedded import embedded_worker

    try:
        with embedded_worker(app.state.settings, app.state.engine):
            yield
    finally:
        app.state.poll_cache.close()


def _pool_capacity(engine: Engine) -> int:
    """Connections the engine's pool can hand out at once (pool size + overflow)."""
    pool = engine.pool
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", 0)
    if callable(size):
        return int(size()) + max(0, int(overflow))
    return 15


def create_app(*, engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="crisis-supply",
        version="1.0.0",
        description="System of record and allocation engine for a crisis supply coalition.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine or (
        get_engine() if settings is get_settings() else make_engine(settings.effective_database_url)
    )
    install_error_handlers(app)
    # Innermost first: idempotency sees only bodies within the limit; rate limits refuse before any work.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(DatabaseConcurrencyMiddleware, limit=_pool_capacity(app.state.engine))
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        import_max_bytes=settings.max_import_body_bytes,
        import_prefixes=IMPORT_PREFIXES,
    )
    app.add_middleware(ConditionalGetMiddleware)
    limits = RateLimits.from_settings(settings)
    app.add_middleware(RateLimitMiddleware, limits=limits)
    install_operations(app, settings)  # request metrics and log, security headers, CORS (app/operations)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: a shipment poll that changes nothing is answered from memory before any other work.
    app.state.poll_cache = ShipmentPollCache(
        app.state.engine,
        PollCacheSettings(
            refresh_s=settings.poll_cache_refresh_seconds,
            max_staleness_s=settings.poll_cache_max_staleness_seconds,
            max_entries=settings.poll_cache_max_entries,
        ),
    )
    app.add_middleware(
        ShipmentPollMiddleware, cache=app.state.poll_cache, reads=limits.reads, metrics=app.state.metrics.requests
    )
    idempotency_openapi.install(app)
    install_openapi(app)  # every status, security and links, documented centrally (app/openapi.py)
    for module in DOMAIN_ROUTERS:
        app.include_router(import_module(module).router)
    return app
