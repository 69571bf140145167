"""Builds records through the services (the real code path), committed, for API tests."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.db import transaction
from app.keys import service as keys
from app.keys.models import ApiKeyCreate
from app.organizations import service as organizations
from app.organizations.models import OrganizationCreate
from app.principal import SYSTEM
from tests.conftest import Actor

_seq = itertools.count(1)


class Factory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _one(self, fn: Any) -> Any:
        with transaction(self.engine) as session:
            return fn(session)

    def org(
        self, kind: str = "hospital", region: str = "north", equity_weight: float = 1.0, name: str | None = None
    ) -> Any:
        data = OrganizationCreate(
            name=name or f"{kind}-{next(_seq)}",
            kind=kind,
            region=region,
            equity_weight=equity_weight,  # type: ignore[arg-type]
        )
        return self._one(lambda s: organizations.create_organization(s, actor=SYSTEM, data=data))

    def actor(self, role: str, organization_id: int | None = None) -> Actor:
        if role in {"requester", "donor", "driver"} and organization_id is None:
            kind = {"requester": "hospital", "donor": "donor", "driver": "coalition"}[role]
            organization_id = self.org(kind=kind).id
        data = ApiKeyCreate(name=f"{role}-{next(_seq)}", role=role, organization_id=organization_id)  # type: ignore[arg-type]
        key, secret = self._one(lambda s: keys.create_key(s, actor=SYSTEM, data=data))
        return Actor(role=role, key=secret, key_id=key.id, organization_id=organization_id)
