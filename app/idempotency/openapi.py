"""Documents, in the OpenAPI schema, the headers and answers that middleware and shared dependencies
add to every operation — so routes stay free of boilerplate and the document stays complete:

- `Idempotency-Key` on every write under /v1 (409 while the first request runs, 422 on reuse);
- `If-Match` marked required where a route declares `IfMatchRequired` (428 without it, 412 when stale);
- 429 (rate limits) on every /v1 operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.deps import IF_MATCH_REQUIRED_DOC
from app.idempotency.middleware import HEADER, MAX_KEY_LENGTH, NOT_SUPPORTED, applies_to

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Client-chosen unique key for this write: a retry with the same key and request replays the first "
        "answer (header `Idempotent-Replayed: true`) instead of running again. Kept 24 hours per API key."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[!-~]([ -~]*[!-~])?$"},
}
RESPONSES = {
    "409": "Conflict with the current state, or a request with this Idempotency-Key is still running",
    "412": "If-Match does not match the current ETag: reread and retry",
    "422": "Invalid input, or an Idempotency-Key reused for a different request",
    "428": "If-Match is required",
    "429": "Rate limit exceeded; see Retry-After",
}


def install(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document(build())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def document(schema: dict[str, Any]) -> dict[str, Any]:
    used = False
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            params = operation.setdefault("parameters", [])
            codes = ["429"]
            if applies_to(method.upper(), path) and (method.upper(), path) not in NOT_SUPPORTED:
                if not any(p.get("name") == HEADER for p in params):
                    params.append(dict(IDEMPOTENCY_PARAMETER))
                codes += ["409", "422"]
            for param in params:
                if param.get("name") == "If-Match" and param.get("description") == IF_MATCH_REQUIRED_DOC:
                    param["required"] = True
                    param["schema"] = {"type": "string", "title": "If-Match"}  # FastAPI's says "or null"
                    codes += ["412", "428"]
            if not params:
                del operation["parameters"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                if code not in responses:
                    used = True
                    responses[code] = {
                        "description": RESPONSES[code],
                        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
                    }
    if used:
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault("Problem", PROBLEM_SCHEMA)
    return schema
