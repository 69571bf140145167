"""FHIR errors: every failure under /fhir/R4 answers an `OperationOutcome` (application/fhir+json).

The app's handlers turn errors into RFC 9457 problem+json. FHIR clients expect an OperationOutcome
instead, so `FhirRoute` swaps in FHIR handlers for its own routes only. The handlers run where the
app's would (after the exception has left the endpoint and its dependencies), so the request's
transaction is rolled back exactly as for any /v1 error: nothing half-written is ever committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.deps import SecuredRoute
from app.errors import DomainError, allowed_methods

FHIR_MEDIA_TYPE = "application/fhir+json"
log = logging.getLogger("app.fhir")

# HTTP status → OperationOutcome.issue.code (http://hl7.org/fhir/issue-type).
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    500: "exception",
    503: "transient",
}


@dataclass(frozen=True)
class Issue:
    """One problem with one element; `expression` is the FHIRPath of the element, e.g. SupplyRequest.quantity.value."""

    diagnostics: str
    expression: str | None = None
    code: str | None = None


class FhirError(DomainError):
    """One or more issues with a resource or a search, answered with this status."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__("; ".join(_describe(i) for i in issues), field=issues[0].expression if issues else None)
        self.status = status
        self.issues = issues


def _describe(issue: Issue) -> str:
    return f"{issue.expression}: {issue.diagnostics}" if issue.expression else issue.diagnostics


class FhirResponse(JSONResponse):
    media_type = FHIR_MEDIA_TYPE


def outcome_body(status: int, issues: list[Issue]) -> dict[str, Any]:
    default_code = ISSUE_CODES.get(status, "processing")
    out: list[dict[str, Any]] = []
    for issue in issues:
        entry: dict[str, Any] = {
            "severity": "error",
            "code": issue.code or default_code,
            "diagnostics": _describe(issue),
        }
        if issue.expression:
            entry["expression"] = [issue.expression]
        out.append(entry)
    return {"resourceType": "OperationOutcome", "issue": out}


def outcome_response(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> FhirResponse:
    return FhirResponse(outcome_body(status, issues), status_code=status, headers=headers)


async def _domain(_request: Request, exc: Exception) -> FhirResponse:
    assert isinstance(exc, DomainError)
    if isinstance(exc, FhirError):
        return outcome_response(exc.status, exc.issues)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    # Service errors that reach here unmapped (auth, 404, 409) name at most one of our own fields.
    return outcome_response(exc.status, [Issue(exc.detail, exc.field or None)], headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts[1:] if parts and parts[0] in {"query", "path", "header", "body"} else parts) or "request"


async def _validation(_request: Request, exc: Exception) -> FhirResponse:
    assert isinstance(exc, RequestValidationError)
    # Only query parameters reach FastAPI validation here (resources are parsed by the FHIR layer),
    # and a bad search parameter is a 400 in FHIR.
    issues = [Issue(str(e.get("msg", "invalid")), _loc(e.get("loc", ()))) for e in exc.errors()]
    return outcome_response(400, issues)


async def _http(request: Request, exc: Exception) -> FhirResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette's Allow names only the one route it matched
        headers["Allow"] = allowed_methods(request)
    return outcome_response(exc.status_code, [Issue(str(exc.detail))], headers)


async def _unexpected(request: Request, exc: Exception) -> FhirResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return outcome_response(500, [Issue("An unexpected error occurred.")])


HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    DomainError: _domain,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Exception: _unexpected,
}


class FhirRoute(SecuredRoute):
    """A secured route whose errors are OperationOutcomes instead of problem+json.

    Starlette looks the handler up in `scope["starlette.exception_handlers"]` when the route's
    endpoint (with its dependencies) raises; this route puts its FHIR handlers first there. (`handle`
    rather than `self.app`: FastAPI runs an included route through a per-inclusion copy of its app.)
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        handlers, _status_handlers = scope.get("starlette.exception_handlers", ({}, {}))
        scope["starlette.exception_handlers"] = ({**handlers, **HANDLERS}, {})
        await super().handle(scope, receive, send)
