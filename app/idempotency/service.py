"""Reserve, complete, release and replay Idempotency-Keys.

Every step is its own short, committed transaction, separate from the request's own: the reservation
must be visible to every other API process *before* the request runs, so that the unique constraint
on (api_key_id, key) lets exactly one of several concurrent requests win.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from sqlalchemy import CursorResult, Table, delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from app.db import transaction, utcnow
from app.idempotency.models import IdempotencyKey
from app.keys.models import ApiKey
from app.keys.service import hash_key

# Core table for the UPDATE/DELETE statements (typed columns; the ORM class is used for reads).
_T: Table = SQLModel.metadata.tables[IdempotencyKey.__tablename__]
# A row the unique constraint rejected can vanish (released) or expire before we read it; retry a few times.
_RESERVE_ATTEMPTS = 4


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Decision:
    """What to do with a request carrying an Idempotency-Key."""

    action: Literal["run", "replay", "busy", "mismatch"]
    reservation_id: int | None = None
    answer: StoredAnswer | None = None


def key_id_for(engine: Engine, token: str) -> int | None:
    """The id of the active API key for this bearer token; None for unknown or revoked keys."""
    with transaction(engine) as session:
        row = session.exec(select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.key_hash == hash_key(token))).first()
    if row is None or row[1] is not None:
        return None
    return row[0]


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """SHA-256 of what makes two requests "the same": method, path, query and body. A JSON body is
    canonicalized (key order, whitespace), so a retry that re-serializes the same object still matches."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def reserve(engine: Engine, *, api_key_id: int, key: str, fingerprint: str, ttl_s: float, stale_s: float) -> Decision:
    """Claim the key for this request (action "run"), or say why not (replay / busy / mismatch)."""
    for _ in range(_RESERVE_ATTEMPTS):
        now = utcnow()
        try:
            with transaction(engine) as session:
                row = IdempotencyKey(
                    api_key_id=api_key_id, key=key, fingerprint=fingerprint, created_at=now, locked_at=now
                )
                session.add(row)
                session.flush()
                return Decision("run", reservation_id=row.id)
        except IntegrityError:
            pass  # someone holds the key: read what they left
        decision = _existing(
            engine, api_key_id=api_key_id, key=key, fingerprint=fingerprint, ttl_s=ttl_s, now=now, stale_s=stale_s
        )
        if decision is not None:
            return decision
    return Decision("busy")


def _existing(
    engine: Engine, *, api_key_id: int, key: str, fingerprint: str, ttl_s: float, stale_s: float, now: datetime
) -> Decision | None:
    """The decision for a key already in the table; None when it went away (expired or released): retry."""
    with transaction(engine) as session:
        row = session.exec(
            select(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key)
        ).first()
        if row is None:
            return None
        if row.created_at < now - timedelta(seconds=ttl_s):
            session.execute(delete(_T).where(_T.c.id == row.id))
            return None
        if row.fingerprint != fingerprint:
            return Decision("mismatch")
        if row.state == "completed":
            answer = StoredAnswer(
                status=row.status_code or 200,
                headers=[(k, v) for k, v in row.response_headers or []],
                body=row.response_body or b"",
            )
            return Decision("replay", answer=answer)
        if row.locked_at < now - timedelta(seconds=stale_s):
            # Abandoned (its process died): take it over. Compare-and-set on the heartbeat, so of several
            # retries arriving together only one takes over; the others see a fresh heartbeat → busy.
            stmt = (
                update(_T)
                .where(_T.c.id == row.id, _T.c.state == "processing", _T.c.locked_at == row.locked_at)
                .values(locked_at=now)
            )
            taken = cast("CursorResult[object]", session.execute(stmt))
            if taken.rowcount == 1:
                return Decision("run", reservation_id=row.id)
        return Decision("busy")


def heartbeat(engine: Engine, reservation_id: int) -> None:
    with transaction(engine) as session:
        session.execute(
            update(_T).where(_T.c.id == reservation_id, _T.c.state == "processing").values(locked_at=utcnow())
        )


def complete(engine: Engine, reservation_id: int, answer: StoredAnswer) -> None:
    with transaction(engine) as session:
        session.execute(
            update(_T)
            .where(_T.c.id == reservation_id, _T.c.state == "processing")
            .values(
                state="completed",
                status_code=answer.status,
                response_headers=[list(h) for h in answer.headers],
                response_body=answer.body,
            )
        )


def release(engine: Engine, reservation_id: int) -> None:
    """Forget a reservation whose request failed (5xx, crash, stream): a retry may run it again."""
    with transaction(engine) as session:
        session.execute(delete(_T).where(_T.c.id == reservation_id, _T.c.state == "processing"))


def purge_expired(engine: Engine, *, ttl_s: float) -> int:
    with transaction(engine) as session:
        stmt = delete(_T).where(_T.c.created_at < utcnow() - timedelta(seconds=ttl_s))
        result = cast("CursorResult[object]", session.execute(stmt))
        return result.rowcount or 0
