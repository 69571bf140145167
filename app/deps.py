"""Typed dependencies: the request's session, the caller, declared role rights and list parameters.

Authorization is declared on every route with `Allow(...)`; `SecuredRoute` refuses to register a
/v1 route that declares none, so a forgotten declaration fails at start-up (deny by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from fastapi.routing import APIRoute
from sqlmodel import Session

from app.db import transaction
from app.errors import Forbidden, PreconditionFailed, PreconditionRequired, Unauthorized
from app.principal import Principal, bearer_token
from app.strict_input import require_strict_input

ROLE_MARKER = "__allowed_roles__"


def get_session(request: Request) -> Iterator[Session]:
    with transaction(request.app.state.engine) as session:
        yield session


# scope="function": commit runs when the endpoint returns, before the response is sent, so a failed
# commit becomes an error response instead of a success the database never kept.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    from app.keys import service as keys  # local import: keys depends on organizations which imports deps

    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("send 'Authorization: Bearer <api key>'")
    key = keys.authenticate(session, token)
    if key is None:
        raise Unauthorized("API key unknown or revoked")
    principal = Principal(key_id=key.id, name=key.name, role=key.role, organization_id=key.organization_id)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def Allow(*roles: str) -> Any:  # noqa: N802  (reads as a declaration on the route)
    """Dependency that lets only the listed roles through (403 for the others)."""

    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"role '{principal.role}' may not use this action")
        return principal

    setattr(check, ROLE_MARKER, frozenset(roles))
    check.__name__ = "allow_" + "_".join(roles)
    return Depends(check)


def role_gate(route: APIRoute) -> Callable[..., Any] | None:
    """The route's Allow(...) check, found in its dependency tree; None when it declares none."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call is not None and getattr(dep.call, ROLE_MARKER, None) is not None:
            return dep.call
        stack.extend(dep.dependencies)
    return None


def declared_roles(route: APIRoute) -> frozenset[str] | None:
    """The roles a route allows; None when it declares none."""
    gate = role_gate(route)
    return None if gate is None else getattr(gate, ROLE_MARKER)


class SecuredRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        gate = role_gate(self)
        if gate is None and not getattr(endpoint, "__public__", False):
            raise RuntimeError(f"route {path} declares no Allow(...) roles; authorization is deny by default")
        require_strict_input(self, gate)  # bodies, integer parameters: the documented types (app/strict_input.py)


def public(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an endpoint as deliberately open (health checks)."""
    fn.__public__ = True  # type: ignore[attr-defined]
    return fn


class ListParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size (≤ 500)")] = 50,
        cursor: Annotated[str | None, Query(max_length=200, description="Opaque cursor from next_cursor")] = None,
    ) -> None:
        self.limit = limit
        self.cursor = cursor


ListDep = Annotated[ListParams, Depends()]


def etag_for(version: int, kind: str = "v") -> str:
    return f'"{kind}{version}"'


def check_if_match(if_match: str | None, current_etag: str, *, required: bool = False) -> None:
    """Optimistic concurrency: a stale If-Match is 412. A missing one is 428 where `required` (PATCH,
    DELETE and plan approval: blind overwrites are refused) and accepted elsewhere (state actions)."""
    if if_match is None:
        if required:
            raise PreconditionRequired("send If-Match with the ETag from your last read of this object")
        return
    candidates = {c.strip() for c in if_match.split(",")}
    if "*" in candidates:
        return
    normalized = {c[2:] if c.startswith("W/") else c for c in candidates}
    if current_etag not in normalized:
        raise PreconditionFailed(f"If-Match {if_match} does not match current ETag {current_etag}")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this ETag (a route may answer 304 before loading more)."""
    if if_none_match is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


IfMatch = Annotated[str | None, Header(alias="If-Match")]
IF_MATCH_REQUIRED_DOC = "ETag from your last read of this object. Required: 428 without it, 412 when stale."
# Optional for FastAPI so a missing header reaches check_if_match(required=True) → 428 (after the 404 for
# a foreign id); the OpenAPI document marks it required (app.idempotency.openapi).
IfMatchRequired = Annotated[str | None, Header(alias="If-Match", description=IF_MATCH_REQUIRED_DOC)]


def iter_api_routes(routes: Any) -> Iterator[APIRoute]:
    """Every APIRoute, including those inside included routers (newer FastAPI keeps them nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from iter_api_routes(original.routes)
