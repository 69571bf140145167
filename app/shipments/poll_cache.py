"""What each API key last saw of each shipment, so a poll that changes nothing is answered from memory.

Drivers' phones and hospital screens poll `GET /v1/shipments/{id}` with `If-None-Match`; nearly every
answer is 304. Authenticating the key and reading the shipment from the database for each of them
costs ~20× a bare endpoint, so this cache remembers, per (key hash, shipment id), the ETag the full
route last answered with 200 or 304. That one fact carries both the authorization (the key could see
the shipment) and the version. An entry is dropped when anything could have changed it:

- the shipment changed: in this process at once (commit hook, app.changes); from other processes
  through the `shipments` change counter, which a refresher thread reads every `refresh_s` (then it
  drops exactly the shipments with a newer feed position);
- a key was revoked (the `api_keys` counter, or this process's commit hook): everything is dropped,
  because revocation must not wait for entries to age out.

The cache answers only while its last successful refresh started less than `max_staleness_s` ago, so a
change made by another process is seen within that bound even if the refresher stalls or the database
is down (then every poll takes the full route and gets its normal answer, e.g. 503). Entries are only
stored when no invalidation ran while the full route was reading, so a refresher that processed a change
in the meantime can never be overtaken by an older answer. The refresher stops when nobody polled for
`idle_stop_s` and starts again on the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from app import changes
from app.keys.service import REVOCATIONS_COUNTER
from app.shipments.feed import FEED

log = logging.getLogger(__name__)

# The counters' names are also the topics their writers note on the session (app.changes).
SHIPMENTS_COUNTER = FEED
KEYS_COUNTER = REVOCATIONS_COUNTER


@dataclass(frozen=True, slots=True)
class PollCacheSettings:
    refresh_s: float = 0.05
    max_staleness_s: float = 1.0
    max_entries: int = 100_000
    idle_stop_s: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.refresh_s > 0 and self.max_entries > 0


class ShipmentPollCache:
    def __init__(self, engine: Engine, settings: PollCacheSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.hits = 0  # polls answered from memory (also exported as a metric)
        self._entries: dict[int, dict[str, str]] = {}  # shipment id → key hash → ETag
        self._size = 0
        self._generation = 0  # +1 on every invalidation
        self._lock = threading.Lock()
        self._fresh_until = 0.0  # monotonic; answers from memory only before this
        self._seen: dict[str, int] | None = None  # counters as of the last refresh
        self._last_use = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        changes.subscribe(self._on_commit)

    # ------------------------------------------------------------------ the request path

    @property
    def generation(self) -> int:
        return self._generation

    def lookup(self, key_hash: str, shipment_id: int) -> str | None:
        """The ETag this key last got for this shipment, if still valid and the cache is fresh."""
        now = time.monotonic()
        self._last_use = now
        if now >= self._fresh_until:
            self._ensure_refresher()
            return None
        per_key = self._entries.get(shipment_id)
        return per_key.get(key_hash) if per_key is not None else None

    def store(self, key_hash: str, shipment_id: int, etag: str, generation: int) -> None:
        """Remember the full route's answer, unless something was invalidated since it started reading."""
        self._last_use = time.monotonic()
        with self._lock:
            if generation != self._generation or not self.settings.enabled:
                return
            if self._size >= self.settings.max_entries:  # bounded memory: start over (rare, cheap)
                self._entries.clear()
                self._size = 0
            per_key = self._entries.setdefault(shipment_id, {})
            if key_hash not in per_key:
                self._size += 1
            per_key[key_hash] = etag
        self._ensure_refresher()

    # ------------------------------------------------------------------ invalidation

    def invalidate(self, shipment_ids: frozenset[int] | set[int]) -> None:
        with self._lock:
            self._generation += 1
            for shipment_id in shipment_ids:
                dropped = self._entries.pop(shipment_id, None)
                if dropped:
                    self._size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._size = 0

    def _on_commit(self, topic: str, ids: frozenset[int]) -> None:
        if topic == SHIPMENTS_COUNTER:
            self.invalidate(ids)
        elif topic == KEYS_COUNTER:
            self.clear()

    # ------------------------------------------------------------------ the refresher

    def _ensure_refresher(self) -> None:
        if not self.settings.enabled or self._stop.is_set():
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="shipment-poll-cache", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the refresher (app shutdown) and stop answering from memory."""
        self._stop.set()
        self._fresh_until = 0.0
        changes.unsubscribe(self._on_commit)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            if time.monotonic() - self._last_use > self.settings.idle_stop_s:
                break
            started = time.monotonic()
            try:
                self.refresh_once()
            except Exception:
                # Database unreachable or the like: answer nothing from memory until a refresh succeeds.
                self._seen = None
                self._fresh_until = 0.0
                self.clear()
                if not failing:
                    log.warning("shipment poll cache: refresh failed; polls take the full route", exc_info=True)
                failing = True
            else:
                if failing:
                    log.info("shipment poll cache: refresh works again")
                failing = False
                self._fresh_until = started + self.settings.max_staleness_s
            self._stop.wait(self.settings.refresh_s)
        self._fresh_until = 0.0

    def refresh_once(self) -> None:
        """Read the counters; drop the entries they say may be stale. Raises when the database does."""
        connection = self.engine.raw_connection()  # DB-API level: on SQLite no BEGIN IMMEDIATE (write lock)
        try:
            cursor = connection.cursor()
            mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
            cursor.execute(
                f"SELECT name, value FROM change_counters WHERE name IN ({mark}, {mark})",
                (SHIPMENTS_COUNTER, KEYS_COUNTER),
            )
            now = {str(name): int(value) for name, value in cursor.fetchall()}
            seen = self._seen
            if seen is None:  # first look (or after a failure): we know nothing that happened before
                self.clear()
            else:
                if now.get(KEYS_COUNTER, 0) != seen.get(KEYS_COUNTER, 0):
                    self.clear()
                before, after = seen.get(SHIPMENTS_COUNTER, 0), now.get(SHIPMENTS_COUNTER, 0)
                if after < before:  # the database was restored from an older backup: trust nothing
                    self.clear()
                elif after > before:
                    # Feed positions are given in commit order under the counter's row lock, so every
                    # change numbered ≤ `after` is committed and visible now.
                    cursor.execute(
                        f"SELECT id FROM shipments WHERE change_seq > {mark} AND change_seq <= {mark}",
                        (before, after),
                    )
                    self.invalidate({int(row[0]) for row in cursor.fetchall()})
            cursor.close()
            connection.rollback()  # end the read transaction (PostgreSQL) before the pool takes it back
        finally:
            connection.close()
        self._seen = now
