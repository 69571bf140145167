"""API keys: random secrets shown once, stored as SHA-256 hashes, revocable."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import Session, select

from app import changes
from app.audit import service as audit
from app.db import utcnow
from app.errors import NotFound, Unprocessable
from app.keys.models import ORG_BOUND_ROLES, ROLES, ApiKey, ApiKeyCreate
from app.organizations import service as organizations
from app.pagination import Page, paginate
from app.principal import Principal

KEY_PREFIX = "cs_"
REVOCATIONS_COUNTER = "api_keys"  # a change_counters row (migration 0003)


def hash_key(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough (no dictionary attack applies).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, *, actor: Principal, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    if data.role not in ROLES:
        raise Unprocessable(f"unknown role {data.role!r}", field="role")
    if data.role in ORG_BOUND_ROLES:
        if data.organization_id is None:
            raise Unprocessable(f"a {data.role} key needs an organization_id", field="organization_id")
        organizations.get_active_for_reference(session, data.organization_id, field="organization_id")
    elif data.organization_id is not None:
        organizations.get_active_for_reference(session, data.organization_id, field="organization_id")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=data.name,
        role=data.role,
        organization_id=data.organization_id,
        key_hash=hash_key(secret),
        prefix=secret[:10],
    )
    session.add(key)
    session.flush()
    audit.record(session, actor=actor, action="api_key.create", obj=key, before=None, exclude={"key_hash"})
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The active key for this secret, or None (unknown or revoked)."""
    key = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(secret))).first()
    if key is None or key.revoked_at is not None:
        return None
    return key


def _visible(principal: Principal):  # type: ignore[no-untyped-def]
    stmt = select(ApiKey)
    if principal.org_bound:
        stmt = stmt.where(ApiKey.organization_id == principal.organization_id)
    return stmt


def get_key(session: Session, *, principal: Principal, key_id: int) -> ApiKey:
    key = session.exec(_visible(principal).where(ApiKey.id == key_id)).first()
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    return key


def list_keys(
    session: Session,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    organization_id: int | None = None,
    role: str | None = None,
) -> Page[ApiKey]:
    stmt = _visible(principal)
    if organization_id is not None:
        stmt = stmt.where(ApiKey.organization_id == organization_id)
    if role is not None:
        stmt = stmt.where(ApiKey.role == role)
    return paginate(session, stmt, ApiKey.id, limit=limit, cursor=cursor)


def revoke_key(session: Session, *, actor: Principal, key_id: int) -> ApiKey:
    key = get_key(session, principal=actor, key_id=key_id)
    if key.revoked_at is None:
        before = audit.snapshot(key, exclude={"key_hash"})
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()
        audit.record(session, actor=actor, action="api_key.revoke", obj=key, before=before, exclude={"key_hash"})
        # In-memory answers keyed by this key (the shipment poll cache) end: in this process at commit,
        # in every other one at its next read of the counter.
        changes.bump_counter(session, REVOCATIONS_COUNTER)
        changes.note_changed(session, REVOCATIONS_COUNTER)
    return key
