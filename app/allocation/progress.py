"""The worker's heartbeat: a thread that, while a run is being solved, keeps `heartbeat_at` fresh,
writes progress, and notices a cancel request or that the run was taken away (re-queued or failed
by stalled-run recovery). Each beat is one short transaction."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.allocation.models import AllocationRun
from app.allocation.runs_service import runs_without_problem, touch
from app.db import transaction, utcnow

log = logging.getLogger("app.worker")


@dataclass(frozen=True)
class Owner:
    """Who holds a running run: the worker and its attempt (a re-queued run claimed again is a new owner)."""

    worker_id: str
    attempt: int

    def holds(self, run: AllocationRun | None) -> bool:
        return (
            run is not None
            and run.status == "running"
            and run.worker_id == self.worker_id
            and run.attempts == self.attempt
        )


def db_now(session: Session) -> datetime:
    """The database server's clock (PostgreSQL), so workers on machines whose clocks disagree still
    judge heartbeats the same way; SQLite is local, its clock is ours."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.execute(text("SELECT now()")).scalar_one()
        return value.astimezone(UTC)
    return utcnow()


def lock_run(session: Session, run_id: int) -> AllocationRun | None:
    """The run row (without its snapshot), locked FOR UPDATE on PostgreSQL."""
    return session.exec(runs_without_problem().where(AllocationRun.id == run_id).with_for_update()).first()


class Heartbeat:
    """Use as a context manager around the solve; `report` moves the progress bar."""

    def __init__(self, engine: Engine, run_id: int, owner: Owner, *, interval_s: float, time_limit_s: float) -> None:
        self.engine = engine
        self.run_id = run_id
        self.owner = owner
        self.interval_s = interval_s
        self.time_limit_s = time_limit_s
        self.lost = False  # the run is no longer ours: stop and write nothing
        self.cancel_requested = False
        self._stage: tuple[str, float, str] | None = None
        self._solving_since: float | None = None
        self._written: tuple[str, float, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-run-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval_s * 2))

    def report(self, stage: str, percent: float, message: str, *, solving: bool = False) -> None:
        """Set the progress and write it now (one short transaction)."""
        with self._lock:
            self._stage = (stage, percent, message)
            self._solving_since = time.monotonic() if solving else None
        self.beat()

    def _current(self) -> tuple[str, float, str] | None:
        with self._lock:
            if self._solving_since is None or self._stage is None:
                return self._stage
            # The solver reports no progress of its own; show elapsed time against the time limit.
            elapsed = time.monotonic() - self._solving_since
            share = min(1.0, elapsed / self.time_limit_s) if self.time_limit_s > 0 else 0.0
            stage, start, _ = self._stage
            return (
                stage,
                round(start + (90.0 - start) * share, 1),
                (f"solving: {elapsed:.0f} s elapsed, time limit {self.time_limit_s:g} s"),
            )

    def beat(self) -> None:
        if self.lost:
            return
        progress = self._current()
        try:
            with transaction(self.engine) as session:
                run = lock_run(session, self.run_id)
                if not self.owner.holds(run):
                    self.lost = True
                    return
                assert run is not None
                now = db_now(session)
                run.heartbeat_at = now
                if progress is not None and progress != self._written:
                    run.progress_stage, run.progress_percent, run.progress_message = progress
                    touch(run, now)
                self.cancel_requested = run.cancel_requested
                session.add(run)
            if progress is not None:
                self._written = progress
        except Exception:  # noqa: BLE001  (a missed beat is retried; recovery tolerates a few)
            log.warning("heartbeat for run %s failed", self.run_id, exc_info=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()
            if self.lost:
                log.warning("run %s was taken from this worker (re-queued, failed or cancelled)", self.run_id)
                return
