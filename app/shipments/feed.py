"""The shipment change feed: a gap-free sequence that mobile clients poll with `updated_since`.

Every transaction that changes shipments ends with `stamp(...)`: one
`UPDATE change_counters SET value = value + n ... RETURNING value`. The counter row stays locked until
that transaction commits, so the next stamping transaction can only take its numbers after this one
is visible: sequence order equals commit order. A reader that has seen sequence number s has therefore
seen every change numbered ≤ s, and `change_seq > cursor` never misses nor repeats an update. Because
the lock is held to commit, stamping must be the last write of the transaction (keep it short).

Long-polls never hold a transaction while they wait: each re-check is a new short transaction in a
worker thread (on SQLite an open transaction would block every writer).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app import changes
from app.db import transaction
from app.errors import Unprocessable
from app.shipments.models import Shipment

FEED = "shipments"
POLL_INTERVAL_S = 0.3
MAX_WAIT_S = 30.0

T = TypeVar("T")


def stamp(session: Session, shipments: Sequence[Shipment]) -> None:
    """Give each changed shipment the next feed position. Call last in the transaction."""
    unique = {id(s): s for s in shipments}
    ordered = sorted(unique.values(), key=lambda s: s.id or 0)
    if not ordered:
        return
    session.flush()  # every other pending write first: the counter lock is held from here to commit
    last = changes.bump_counter(session, FEED, len(ordered))
    first = last - len(ordered) + 1
    for offset, shipment in enumerate(ordered):
        shipment.change_seq = first + offset
        session.add(shipment)
    session.flush()
    # This process's poll cache forgets these shipments the moment the transaction commits.
    changes.note_changed(session, FEED, (s.id for s in ordered if s.id is not None))


def current_position(session: Session) -> int:
    value = session.execute(text("SELECT value FROM change_counters WHERE name = :name"), {"name": FEED}).scalar()
    return int(value or 0)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """A cursor this API issued, or "0" for the beginning of the feed."""
    if cursor == "0":
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        if prefix != "seq" or int(value) < 0:
            raise ValueError(prefix)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Unprocessable("not a feed cursor this API issued (start with 0)", field="updated_since") from exc


async def poll(engine: Engine, read: Callable[[Session], list[T]], *, after: int, wait_s: float) -> list[T]:
    """Run `read` in a fresh short transaction (in a worker thread) until it returns something or
    `wait_s` passes. A cheap look at the counter skips the query while nothing changed at all."""
    deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))

    def check() -> list[T]:
        with transaction(engine) as session:
            if current_position(session) <= after:
                return []
            return read(session)

    while True:
        found = await anyio.to_thread.run_sync(check)
        remaining = deadline - time.monotonic()
        if found or remaining <= 0:
            return found
        await anyio.sleep(min(POLL_INTERVAL_S, remaining))
