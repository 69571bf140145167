"""JSON request bodies must hold the JSON types the OpenAPI document states.

FastAPI validates a decoded JSON body in pydantic's lax mode, which takes `true` or "5" for a number and 1 for a
boolean: requests the document calls invalid would be accepted (the fuzz suite's negative tests found it,
docs/fuzzing.md). Every secured route with a JSON body therefore gets one more dependency that checks the raw body
with the same model in strict JSON mode and answers a type mismatch with the usual 422 problem+json.

It runs after the route's role check (which it depends on, so 401 and 403 still come first, as for any invalid
body) and before FastAPI's own validation, which then parses the body as before.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from fastapi import Depends, Request
from fastapi.dependencies.utils import get_parameterless_sub_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model
from sqlmodel import SQLModel


def require_strict_json_body(route: APIRoute, gate: Callable[..., Any] | None) -> None:
    """Add the check to a route with a body; `gate` is its role check (None for a public route)."""
    if route.body_field is None:
        return
    depends = Depends(_strict_json_check(_strict_adapter(route.body_field.field_info.annotation), gate))
    # Route-level dependencies run first, in order: included routers rebuild the route from `dependencies`, and
    # the route's own dependant gets the same entry at the same place.
    route.dependencies.append(depends)
    route.dependant.dependencies.insert(
        len(route.dependencies) - 1, get_parameterless_sub_dependant(depends=depends, path=route.path_format)
    )


@cache
def _strict_adapter(body_type: Any) -> TypeAdapter[Any]:
    """SQLModel classes validate through their own `__init__` (python mode, lax), which `strict=True` never reaches:
    their fields are checked through a plain pydantic copy (types and constraints; SQLModel bodies declare no
    validators of their own)."""
    if isinstance(body_type, type) and issubclass(body_type, SQLModel):
        fields: dict[str, Any] = {name: (f.annotation, f) for name, f in body_type.model_fields.items()}
        body_type = create_model(
            body_type.__name__, __config__=ConfigDict(extra=body_type.model_config.get("extra")), **fields
        )
    return TypeAdapter(body_type)


def strict_json_errors(adapter: TypeAdapter[Any], raw: bytes | str) -> list[dict[str, Any]]:
    """What a strict JSON reading of the body finds wrong (pydantic error dicts, located under "body")."""
    try:
        adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        return [{**e, "loc": ("body", *e["loc"])} for e in exc.errors() if not _tolerated(e)]
    return []


def check_strict_json(body_type: Any, data: Any) -> None:
    """For a route that picks its body's model itself (by a `kind` field): the same check on the decoded body."""
    errors = strict_json_errors(_strict_adapter(body_type), json.dumps(data))
    if errors:
        raise RequestValidationError(errors)


def _strict_json_check(adapter: TypeAdapter[Any], gate: Callable[..., Any] | None) -> Callable[..., Awaitable[None]]:
    async def check(request: Request) -> None:
        raw = await request.body()  # Starlette keeps it: FastAPI reads the same bytes afterwards
        if raw and _is_json(request.headers.get("content-type")) and (errors := strict_json_errors(adapter, raw)):
            raise RequestValidationError(errors)

    if gate is None:
        return check

    async def gated_check(request: Request, _principal: Any = Depends(gate)) -> None:
        await check(request)

    return gated_check


def _tolerated(error: Any) -> bool:
    """Malformed JSON is left to FastAPI's own answer (the same 422, naming the position); 148.0 is an integer to
    JSON Schema, so the document allows it where it says `integer` (the lax pass then takes it as 148)."""
    if error["type"] == "json_invalid":
        return True
    value = error.get("input")
    return error["type"] == "int_type" and isinstance(value, float) and value.is_integer()


def _is_json(content_type: str | None) -> bool:
    """The media types FastAPI decodes as JSON: none given, application/json and application/*+json."""
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
