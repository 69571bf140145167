"""Requests must hold the types the OpenAPI document states: JSON bodies the JSON types, integer parameters
integers written as integers.

FastAPI validates in pydantic's lax mode, which takes `true` or "5" for a number in a JSON body and "0.0",
"+5" or "1_000" for an integer query or path parameter: requests the document calls invalid would be accepted
(the fuzz suite's negative tests found both, docs/fuzzing.md). Every secured route with a JSON body or an
integer parameter therefore gets one more dependency that checks the raw body in strict JSON mode (the same
model) and the raw integer parameters against `-?[0-9]+`, and answers a mismatch with the usual 422.

It runs after the route's role check (which it depends on, so 401 and 403 still come first, as for any other
invalid input) and before FastAPI's own validation, which then parses the request as before.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Depends, Request, params
from fastapi.dependencies.utils import get_flat_params, get_parameterless_sub_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model
from sqlmodel import SQLModel

INTEGER = re.compile(r"-?[0-9]+")


def require_strict_input(route: APIRoute, gate: Callable[..., Any] | None) -> None:
    """Add the check to a route that takes a body or integer parameters; `gate` is its role check (None: public)."""
    integers = [
        ("query" if isinstance(f.field_info, params.Query) else "path", f.alias)
        for f in get_flat_params(route.dependant)
        if isinstance(f.field_info, params.Query | params.Path) and _is_integer(f.field_info.annotation)
    ]
    body = None if route.body_field is None else _strict_adapter(route.body_field.field_info.annotation)
    if body is None and not integers:
        return
    depends = Depends(_strict_input_check(body, integers, gate))
    # Route-level dependencies run first, in order: included routers rebuild the route from `dependencies`, and
    # the route's own dependant gets the same entry at the same place.
    route.dependencies.append(depends)
    route.dependant.dependencies.insert(
        len(route.dependencies) - 1, get_parameterless_sub_dependant(depends=depends, path=route.path_format)
    )


def check_strict_json(body_type: Any, data: Any) -> None:
    """For a route that picks its body's model itself (by a `kind` field): the body check on the decoded body."""
    errors = _body_errors(_strict_adapter(body_type), json.dumps(data))
    if errors:
        raise RequestValidationError(errors)


def _is_integer(annotation: Any) -> bool:
    """`int`, `int | None`, `Annotated[int, …]`: the parameters whose text must be an integer's."""
    if get_origin(annotation) is Annotated:
        return _is_integer(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is_integer(args[0])
    return annotation is int


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


def _body_errors(adapter: TypeAdapter[Any], raw: bytes | str) -> list[dict[str, Any]]:
    """What a strict JSON reading of the body finds wrong (pydantic error dicts, located under "body")."""
    try:
        adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        return [{**e, "loc": ("body", *e["loc"])} for e in exc.errors() if not _tolerated(e)]
    return []


def _tolerated(error: Any) -> bool:
    """Malformed JSON is left to FastAPI's own answer (the same 422, naming the position); 148.0 is an integer to
    JSON Schema, so the document allows it where it says `integer` (the lax pass then takes it as 148)."""
    if error["type"] == "json_invalid":
        return True
    value = error.get("input")
    return error["type"] == "int_type" and isinstance(value, float) and value.is_integer()


def _integer_errors(request: Request, integers: list[tuple[str, str]]) -> list[dict[str, Any]]:
    errors = []
    for location, name in integers:
        values = request.query_params.getlist(name) if location == "query" else [request.path_params.get(name)]
        for value in values:
            if isinstance(value, str) and not INTEGER.fullmatch(value):
                message = "Input should be a valid integer"
                errors.append({"type": "int_parsing", "loc": (location, name), "msg": message, "input": value})
    return errors


def _strict_input_check(
    body: TypeAdapter[Any] | None, integers: list[tuple[str, str]], gate: Callable[..., Any] | None
) -> Callable[..., Awaitable[None]]:
    async def check(request: Request) -> None:
        errors = _integer_errors(request, integers)
        if body is not None and _is_json(request.headers.get("content-type")):
            raw = await request.body()  # Starlette keeps it: FastAPI reads the same bytes afterwards
            if raw:
                errors += _body_errors(body, raw)
        if errors:
            raise RequestValidationError(errors)

    if gate is None:
        return check

    async def gated_check(request: Request, _principal: Any = Depends(gate)) -> None:
        await check(request)

    return gated_check


def _is_json(content_type: str | None) -> bool:
    """The media types FastAPI decodes as JSON: none given, application/json and application/*+json."""
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
