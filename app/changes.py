"""Change signals for in-memory caches: cross-process counters and same-process commit hooks.

Two ways a cache learns that data it holds changed:

- **Counters** (`change_counters` rows, bumped inside the writing transaction): any process can read
  them to see that something changed since it last looked, whichever process or machine wrote it.
  `shipments` numbers the shipment change feed (app.shipments.feed); `api_keys` counts revocations.
- **Commit hooks**: a service notes what it changed on its session (`note_changed`); once that session
  commits, every subscriber in this process hears it at once, so a process never serves its own stale
  data — not even for the few milliseconds until the next counter read.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session

Subscriber = Callable[[str, frozenset[int]], None]

_INFO_KEY = "crisis_changed"
# Weak references to bound methods: an app (and its cache) that is gone stops hearing, no leak.
_subscribers: list[weakref.WeakMethod[Any]] = []


def bump_counter(session: Session, name: str, n: int = 1) -> int:
    """Add `n` to a change counter in this transaction; its new value. The row stays locked to commit."""
    value = session.execute(
        text("UPDATE change_counters SET value = value + :n WHERE name = :name RETURNING value"),
        {"n": n, "name": name},
    ).scalar_one()
    return int(value)


def note_changed(session: Session, topic: str, ids: Iterable[int] = ()) -> None:
    """Record that this transaction changed `topic` (and which ids); subscribers hear it after commit."""
    changed: dict[str, set[int]] = session.info.setdefault(_INFO_KEY, {})
    changed.setdefault(topic, set()).update(ids)


def subscribe(subscriber: Subscriber) -> None:
    """Hear every commit's notes (`subscriber` must be a bound method; it is held weakly)."""
    _subscribers.append(weakref.WeakMethod(subscriber))  # type: ignore[arg-type]


def unsubscribe(subscriber: Subscriber) -> None:
    _subscribers[:] = [ref for ref in _subscribers if ref() is not None and ref() != subscriber]


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    changed: dict[str, set[int]] | None = session.info.pop(_INFO_KEY, None)
    if not changed:
        return
    live = [subscriber for subscriber in (ref() for ref in _subscribers) if subscriber is not None]
    if len(live) < len(_subscribers):  # apps that are gone
        _subscribers[:] = [ref for ref in _subscribers if ref() is not None]
    for topic, ids in changed.items():
        frozen = frozenset(ids)
        for subscriber in live:
            subscriber(topic, frozen)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_INFO_KEY, None)  # nothing was kept, so nothing changed
