"""Typed domain errors and their mapping to RFC 9457 problem+json, in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_BASE = "https://crisis-supply.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_DB_INT = 2**31 - 1  # INTEGER columns on PostgreSQL


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
                msg = "body is not valid JSON"
            errors.append({"field": _loc_to_field(loc), "message": msg})
        return validation_problem(errors, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
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
        return resp

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value it cannot hold (e.g. an id beyond 32 bits on PostgreSQL).
        # An out-of-range id in the path names nothing that exists: 404. Anything else is bad input.
        for name, value in request.path_params.items():
            if isinstance(value, int | str) and str(value).lstrip("-").isdigit() and abs(int(value)) > MAX_DB_INT:
                return problem(404, "Not found", f"{name} {value} not found", slug="not-found", instance=request.url.path)
        return validation_problem([{"field": "body", "message": "a value is out of range"}], request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("app").exception("unhandled error on %s", request.url.path)
        return problem(
            500, "Internal error", "An unexpected error occurred.", slug="internal", instance=request.url.path
        )
