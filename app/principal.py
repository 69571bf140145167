"""The authenticated caller. Kept apart from deps so services can type against it without FastAPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int | None
    name: str
    role: str
    organization_id: int | None

    @property
    def org_bound(self) -> bool:
        """Requester, donor and driver keys see only their own organisation's objects."""
        return self.role in {"requester", "donor", "driver"}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for anything else.
    One parser for authentication, rate limits, idempotency scoping and the shipment poll cache."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


SYSTEM = Principal(key_id=None, name="system", role="admin", organization_id=None)
