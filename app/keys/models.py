from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

Role = Literal["admin", "logistics", "requester", "donor", "driver"]
ROLES: tuple[str, ...] = ("admin", "logistics", "requester", "donor", "driver")
ORG_BOUND_ROLES: frozenset[str] = frozenset({"requester", "donor", "driver"})


class ApiKey(SQLModel, table=True):
    """A principal. Only the SHA-256 of the random secret is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(in_list("role", ROLES), name="role"),
        CheckConstraint(
            "role IN ('admin', 'logistics') OR organization_id IS NOT NULL", name="org_bound_roles_have_org"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    organization_id: int | None = Field(default=None, foreign_key="organizations.id", index=True)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = ts_field()
    revoked_at: datetime | None = ts_field(nullable=True, default_now=False)


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Role
    organization_id: int | None = None


class ApiKeyPublic(BaseModel):
    id: int
    name: str
    role: str
    organization_id: int | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The secret; shown once, never stored")
