"""Typed domain errors and their mapping to RFC 9457 problem+json, in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_BASE = "https://crisis-supply.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_DB_INT = 2**31 - 1  # INTEGER columns on PostgreSQL
# The 400 details of FastAPI (fastapi.routing) and Starlette (starlette.formparsers) for an undecodable body.
BODY_PARSE_ERRORS = frozenset({"There was an error parsing the body", "Invalid multipart data."})
DB_RETRY_AFTER_S = 2  # Retry-After on a 503 while the database is unreachable (a restart takes seconds)
# PostgreSQL SQLSTATEs meaning "no database right now": connection exception (class 08), admin/crash
# shutdown and "starting up" (57P01-03), too many connections (53300). psycopg's own client-side
# failures (connection refused, connection lost) carry no SQLSTATE at all.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_SQLITE_BUSY = {"SQLITE_BUSY", "SQLITE_LOCKED"}


class DomainError(Exception):
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra or {}


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Not allowed for this role"


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class PreconditionFailed(DomainError):
    status, slug, title = 412, "precondition-failed", "The resource has changed (ETag mismatch)"


class PayloadTooLarge(DomainError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class Unprocessable(DomainError):
    """Semantically invalid input: names the field, like schema validation errors."""

    status, slug, title = 422, "validation-error", "Invalid input"


class PreconditionRequired(DomainError):
    status, slug, title = 428, "precondition-required", "If-Match header required"


class TooManyRequests(DomainError):
    status, slug, title = 429, "too-many-requests", "Rate limit exceeded"


class ServiceUnavailable(DomainError):
    status, slug, title = 503, "unavailable", "Service temporarily unavailable"


def problem(
    status: int, title: str, detail: str, *, slug: str, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached right now (down, restarting, connection lost, pool exhausted,
    SQLite busy past its timeout): a 503 the client may retry, not a bug. Other database errors stay 500."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if getattr(orig, "sqlite_errorname", None) in _SQLITE_BUSY:
        return True
    if type(orig).__module__.startswith("psycopg"):
        sqlstate = getattr(orig, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    return False


def unavailable_problem(instance: str | None) -> JSONResponse:
    """503 problem+json with Retry-After; generic text (never the driver's message, which names hosts)."""
    resp = problem(
        503,
        ServiceUnavailable.title,
        "The database is temporarily unreachable; retry shortly.",
        slug=ServiceUnavailable.slug,
        instance=instance,
    )
    resp.headers["Retry-After"] = str(DB_RETRY_AFTER_S)
    return resp


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    out = ""
    for p in parts:
        if p.isdigit():
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out or "body"


def validation_problem(errors: list[dict[str, Any]], instance: str | None = None) -> JSONResponse:
    items = [{"field": e["field"], "message": e["message"]} for e in errors]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in items)
    return problem(422, "Invalid input", detail, slug="validation-error", instance=instance, errors=items)


def allowed_methods(request: Request, *, documented_only: bool = False) -> str:
    """Every method the request's path supports, for `Allow` (RFC 9110 §15.5.6). Starlette's own 405 names only
    the first route whose path matched, and FastAPI has one route per method, so `GET /x` + `POST /x` answered
    `Allow: GET`. Routes hidden from the OpenAPI document (catch-alls such as FHIR's) count only where no
    documented route serves the path (never with `documented_only`: "" when none does)."""
    from app.deps import iter_api_routes  # app.deps imports this module

    path = request.scope["path"]
    matched = [r for r in iter_api_routes(request.app.routes) if r.path_regex.match(path)]
    documented = [r for r in matched if r.include_in_schema]
    routes = documented if documented or documented_only else matched
    return ", ".join(sorted({m for r in routes for m in r.methods or ()}))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, Unprocessable):
            return validation_problem([{"field": exc.field or "body", "message": exc.detail}], request.url.path)
        extra = dict(exc.extra)
        if exc.field:
            extra["field"] = exc.field
        resp = problem(exc.status, exc.title, exc.detail, slug=exc.slug, instance=request.url.path, **extra)
        if "retry_after" in exc.extra:
            resp.headers["Retry-After"] = str(exc.extra["retry_after"])
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = err.get("loc", ())
            msg = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                # Its loc is ("body", <character offset>): the field is the body, not "[offset]".
                msg, loc = f"body is not valid JSON (at character {loc[-1] if loc else 0})", ("body",)
            errors.append({"field": _loc_to_field(loc), "message": msg})
        return validation_problem(errors, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail in BODY_PARSE_ERRORS:
            # A body that cannot be decoded (not UTF-8, a broken multipart form) is bad input like invalid
            # JSON: the same 422 naming the body, rather than an undocumented 400.
            return validation_problem([{"field": "body", "message": "body could not be decoded"}], request.url.path)
        titles = {404: "Not found", 405: "Method not allowed", 401: "Authentication required"}
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(exc.status_code, "http-error")
        resp = problem(
            exc.status_code,
            titles.get(exc.status_code, "HTTP error"),
            str(exc.detail),
            slug=slug,
            instance=request.url.path,
        )
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        if exc.status_code == 405:
            resp.headers["Allow"] = allowed_methods(request)
        return resp

    # SQLite's driver raises OverflowError (not DataError) for an integer beyond 64 bits: the same answer.
    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _data(request: Request, exc: Exception) -> JSONResponse:
        # The database refused a value it cannot hold (e.g. an id beyond 32 bits on PostgreSQL).
        # An out-of-range id in the path names nothing that exists: 404. Anything else is bad input.
        for name, value in request.path_params.items():
            if isinstance(value, int | str) and str(value).lstrip("-").isdigit() and abs(int(value)) > MAX_DB_INT:
                return problem(
                    404, "Not found", f"{name} {value} not found", slug="not-found", instance=request.url.path
                )
        for name, raw in request.query_params.multi_items():
            if raw.strip().lstrip("-").isdigit() and abs(int(raw)) > MAX_DB_INT:
                return validation_problem([{"field": name, "message": "out of range"}], request.url.path)
        return validation_problem([{"field": "body", "message": "a value is out of range"}], request.url.path)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            raise exc  # a real error: the 500 path (ObservabilityMiddleware) logs it with its traceback
        import logging

        logging.getLogger("app").warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
        return unavailable_problem(request.url.path)

    for db_error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(db_error, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("app").exception("unhandled error on %s", request.url.path)
        return problem(
            500, "Internal error", "An unexpected error occurred.", slug="internal", instance=request.url.path
        )
