"""Completes the generated OpenAPI document in one place, so every operation documents every answer it can give.

FastAPI documents what a route declares; much of what clients see comes from shared layers instead:
authentication (401), role checks (403), path ids (404), middleware (413 body limit, 429 rate limits,
304 conditional GET, the `Idempotency-Key` header), optimistic concurrency (412/428) and the problem+json
error format (FastAPI would describe its own 422 body, which this service never sends). `install_openapi`
post-processes the generated schema once, from the routes' declarations, rather than asking every router to
repeat them. The fuzz suite (tests/fuzz, docs/fuzzing.md) holds the API to this document: any status or body
not documented here fails it.

It also adds OpenAPI links (create → read → act) so stateful tests can follow a created object's id and
ETag through the operations on it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.deps import declared_roles, iter_api_routes
from app.errors import PROBLEM_MEDIA_TYPE
from app.fhir.outcome import FHIR_MEDIA_TYPE
from app.idempotency.middleware import HEADER as IDEMPOTENCY_HEADER
from app.idempotency.middleware import NOT_SUPPORTED as IDEMPOTENCY_NOT_SUPPORTED
from app.idempotency.middleware import applies_to as idempotency_applies_to
from app.idempotency.openapi import IDEMPOTENCY_PARAMETER

API_PREFIX = "/v1/"
FHIR_PREFIX = "/fhir/"
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
# Sub-resources that exist only later (a run's plan, once the solver has finished): no link from the create, which
# would promise them at once; the read of the parent links to them instead.
LATER_SUBRESOURCES = frozenset({"plan"})
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
SUCCESS = ("200", "201", "202")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OUTCOME_REF = {"$ref": "#/components/schemas/OperationOutcome"}
BEARER = "bearerAuth"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. Extension members depend on the problem type.",
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "URI naming the problem type"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path"},
        "field": {"type": "string", "description": "The input field the problem is about"},
        "errors": {
            "type": "array",
            "description": "422: every invalid field ({field, message}) or, for imports, cell ({row, column, message})",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "row": {"type": ["integer", "null"]},
                    "column": {"type": ["string", "null"]},
                },
                "required": ["message"],
            },
        },
        "conflicts": {
            "type": "array",
            "description": "409 on plan approval: every line that no longer fits",
            "items": {"type": "object"},
        },
        "conflicting_run_id": {"type": "integer"},
        "kind": {"type": "string"},
        "error_count": {"type": "integer"},
    },
    "required": ["type", "title", "status", "detail"],
}
OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "description": "FHIR R4 OperationOutcome: every error under /fhir/R4 (except 413 and 429, answered by middleware)",
    "type": "object",
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "severity": {"type": "string"},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["severity", "code"],
            },
        },
    },
    "required": ["resourceType", "issue"],
}
DESCRIPTIONS = {
    "304": "Not modified: If-None-Match matches the current ETag (no body)",
    "400": "Malformed search parameter or resource",
    "401": "No API key, or an unknown or revoked one",
    "403": "This role may not use this action",
    "404": "No such object, or one that belongs to another organisation",
    "409": "Conflict with the current state, or a request with this Idempotency-Key is still running",
    "412": "If-Match does not match the current ETag: reread and retry",
    "413": "Request body too large",
    "415": "Unsupported request media type",
    "422": "Invalid input (every field named), or an Idempotency-Key reused for a different request",
    "428": "If-Match is required",
    "429": "Rate limit exceeded (per API key, or failed authentications per client address); see Retry-After",
}
RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "401": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    "429": {"Retry-After": {"required": True, **RETRY_AFTER}},
    "409": {"Retry-After": RETRY_AFTER},
}
ETAG_HEADER = {"description": "The object's version, for If-Match and If-None-Match", "schema": {"type": "string"}}
LOCATION_HEADER = {"description": "URL of the created object", "schema": {"type": "string"}}


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with a version that completes the generated document once."""
    build = app.openapi  # FastAPI's (or a wrapper of it): builds the document once and caches it on the app
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = build()
        if not any(done is schema for done in completed):
            completed[:] = [complete(schema, list(iter_api_routes(app.routes)))]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], routes: list[APIRoute]) -> dict[str, Any]:
    by_operation = {(method.lower(), route.path_format): route for route in routes for method in route.methods or ()}
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(Problem=PROBLEM_SCHEMA, OperationOutcome=OUTCOME_SCHEMA)
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (SPEC §2): `Authorization: Bearer <key>`",
    }
    for path, method, operation in _operations(schema):
        route = by_operation.get((method, path))
        if path.startswith(API_PREFIX) or path.startswith(FHIR_PREFIX):
            _document(schema, path, method, operation, route)
    _add_links(schema)
    _drop_unused_fastapi_schemas(schema)
    return schema


def _drop_unused_fastapi_schemas(schema: dict[str, Any]) -> None:
    """FastAPI's validation-error schemas describe a body this service never sends (errors are problem+json)."""
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f'"#/components/schemas/{name}"' not in json.dumps(schema.get("paths", {})):
            del schemas[name]


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _is_secured(route: APIRoute | None) -> bool:
    """Needs an API key: declares its roles and is not marked public (health checks, FHIR metadata)."""
    return route is not None and not getattr(route.endpoint, "__public__", False) and declared_roles(route) is not None


def _document(
    schema: dict[str, Any], path: str, method: str, operation: dict[str, Any], route: APIRoute | None
) -> None:
    fhir = path.startswith(FHIR_PREFIX)
    params = operation.setdefault("parameters", [])
    responses = operation.setdefault("responses", {})
    body = operation.get("requestBody")
    media_types = set((body or {}).get("content", {}))

    if (
        not fhir
        and idempotency_applies_to(method.upper(), path)
        and (method.upper(), path) not in IDEMPOTENCY_NOT_SUPPORTED
    ):
        if not any(p.get("name") == IDEMPOTENCY_HEADER for p in params):
            params.append(copy.deepcopy(IDEMPOTENCY_PARAMETER))
    if_match = next((p for p in params if p.get("name") == "If-Match"), None)

    codes: list[str] = []
    if _is_secured(route):
        operation["security"] = [{BEARER: []}]
        codes += ["401", "403", "429"]
    if any(p.get("in") == "path" for p in params):
        codes.append("404")
    if method in WRITE_METHODS:
        codes.append("409")
    if if_match is not None:
        codes.append("412")
        if if_match.get("required"):
            codes.append("428")
    if body is not None:
        codes.append("413")
        if media_types - {"application/json"}:  # the route reads the body itself and checks its media type
            codes.append("415")
    if params or body is not None:
        codes += ["400", "422"] if fhir else ["422"]
    if method == "get" and _returns_etag(schema, path, operation):
        codes.append("304")
    for code in codes:
        # Middleware (body limit, rate limits) answers problem+json on every path, FHIR's included.
        outcome = fhir and code not in ("413", "429")
        _set_error(responses, code, outcome=outcome)
    if not params:
        del operation["parameters"]
    _document_success_headers(schema, method, operation)


def _set_error(responses: dict[str, Any], code: str, *, outcome: bool) -> None:
    if code == "304":
        responses.setdefault(code, {"description": DESCRIPTIONS[code], "headers": {"ETag": ETAG_HEADER}})
        return
    existing = responses.get(code, {})
    # FastAPI's own 422 (HTTPValidationError, application/json) is replaced: errors are always problem+json.
    if existing and code != "422" and "content" in existing and not outcome:
        content = existing["content"]
        if PROBLEM_MEDIA_TYPE in content and not content[PROBLEM_MEDIA_TYPE].get("schema"):
            content[PROBLEM_MEDIA_TYPE]["schema"] = PROBLEM_REF
        for name, header in RESPONSE_HEADERS.get(code, {}).items():
            existing.setdefault("headers", {}).setdefault(name, copy.deepcopy(header))
        return
    media_type, ref = (FHIR_MEDIA_TYPE, OUTCOME_REF) if outcome else (PROBLEM_MEDIA_TYPE, PROBLEM_REF)
    description = existing.get("description")
    if description in (None, "", "Validation Error"):  # FastAPI's generic text says nothing about this service
        description = DESCRIPTIONS[code]
    response: dict[str, Any] = {"description": description, "content": {media_type: {"schema": ref}}}
    if code in RESPONSE_HEADERS:
        response["headers"] = copy.deepcopy(RESPONSE_HEADERS[code])
    responses[code] = response


def _resolve(schema: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any]:
    while node and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema.get("components", {}).get("schemas", {}).get(name)
    return node or {}


def _success(operation: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for code in SUCCESS:
        if code in operation.get("responses", {}):
            return code, operation["responses"][code]
    return None


def _success_schema(schema: dict[str, Any], operation: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The success response's JSON schema as declared (a $ref when named) and resolved."""
    found = _success(operation)
    if found is None:
        return None, {}
    declared = found[1].get("content", {}).get("application/json", {}).get("schema")
    return declared, _resolve(schema, declared)


def _is_versioned(schema: dict[str, Any], operation: dict[str, Any]) -> bool:
    _, resolved = _success_schema(schema, operation)
    return resolved.get("properties", {}).get("version", {}).get("type") == "integer"


def _returns_etag(schema: dict[str, Any], path: str, operation: dict[str, Any]) -> bool:
    """Versioned objects are answered with an ETag (and so a matching If-None-Match gets 304); FHIR reads of
    one resource carry a weak ETag of its versionId."""
    if path.startswith(FHIR_PREFIX):
        return path.endswith("/{resource_id}")
    return _is_versioned(schema, operation) or any(
        p.get("name") == "If-None-Match" for p in operation.get("parameters", [])
    )


def _document_success_headers(schema: dict[str, Any], method: str, operation: dict[str, Any]) -> None:
    found = _success(operation)
    if found is None:
        return
    code, response = found
    headers = response.setdefault("headers", {})
    if _is_versioned(schema, operation):
        headers.setdefault("ETag", ETAG_HEADER)
    if method == "post" and code == "201":
        headers.setdefault("Location", LOCATION_HEADER)
    if not headers:
        del response["headers"]


# --------------------------------------------------------------------------- links for stateful tests


def _path_params(path: str) -> list[str]:
    return [segment[1:-1] for segment in path.split("/") if segment.startswith("{") and segment.endswith("}")]


def _add_links(schema: dict[str, Any]) -> None:
    """From each create (POST to a collection, answering the new object with its `id`) and each read of one
    object, to every operation on that object or below it: the object's id fills the path parameter, ids of
    listed children (`lines[0].id`) fill deeper ones, and the ETag fills `If-Match` where the target answers
    with the same kind of object (so the ETag is the right one)."""
    operations = [(path, method, op) for path, method, op in _operations(schema) if path.startswith(API_PREFIX)]
    for source_path, source_method, source in operations:
        found = _success(source)
        declared, resolved = _success_schema(schema, source)
        if found is None or "id" not in resolved.get("properties", {}):
            continue
        if source_method == "post" and not source_path.endswith("}"):
            new_id_at: int | None = len(source_path.split("/"))  # the segment naming the created object
            bound: dict[str, str] = {}
        elif source_method == "get" and "{" in source_path:
            new_id_at, bound = None, {name: f"$request.path.{name}" for name in _path_params(source_path)}
        else:
            continue
        links: dict[str, Any] = {}
        for target_path, target_method, target in operations:
            same_object = target_path == source_path and new_id_at is None
            if target_method == source_method and target_path == source_path:
                continue
            if not (same_object or target_path.startswith(source_path + "/")):
                continue
            parameters = _link_parameters(schema, target_path, new_id_at, bound, resolved)
            if parameters is None:
                continue
            target_declared, _ = _success_schema(schema, target)
            wants_if_match = any(p.get("name") == "If-Match" for p in target.get("parameters", []))
            if wants_if_match and declared is not None and target_declared == declared:
                parameters["header.If-Match"] = "$response.header.ETag"
            links[target["operationId"]] = {"operationId": target["operationId"], "parameters": parameters}
        if links:
            found[1].setdefault("links", {}).update(links)


def _link_parameters(
    schema: dict[str, Any], target_path: str, new_id_at: int | None, bound: dict[str, str], resolved: dict[str, Any]
) -> dict[str, str] | None:
    """Where each of the target's path parameters comes from; None when one cannot be filled."""
    parameters: dict[str, str] = {}
    segments = target_path.split("/")
    if new_id_at is not None and not (len(segments) > new_id_at and segments[new_id_at].startswith("{")):
        return None
    if new_id_at is not None and LATER_SUBRESOURCES.intersection(segments[new_id_at:]):
        return None
    for index, segment in enumerate(segments):
        if not segment.startswith("{"):
            continue
        name = segment[1:-1]
        if name in bound:
            parameters[f"path.{name}"] = bound[name]
        elif index == new_id_at:
            parameters[f"path.{name}"] = "$response.body#/id"
        else:
            children = _resolve(schema, resolved.get("properties", {}).get(segments[index - 1]))
            if children.get("type") != "array" or "id" not in _resolve(schema, children.get("items")).get(
                "properties", {}
            ):
                return None
            parameters[f"path.{name}"] = f"$response.body#/{segments[index - 1]}/0/id"
    return parameters
