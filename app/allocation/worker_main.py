"""Process entry point of a worker (`crisis-supply worker`, `python -m app.allocation.worker_main`):
logging, signals, the parent-death watch of an embedded worker, then `run_worker`."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import app.models  # noqa: F401  (every table, so foreign keys resolve when a worker writes)
from app.allocation.embedded import PARENT_PID_ENV
from app.allocation.worker import (
    HEARTBEAT_INTERVAL_S,
    POLL_INTERVAL_S,
    STALE_AFTER_S,
    run_worker,
    worker_identity,
)
from app.config import get_settings
from app.db import get_engine


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """An embedded worker must not outlive the API that started it (even after kill -9)."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            logging.getLogger("app.worker").warning("parent process %s is gone; stopping", parent_pid)
            stop.set()
            return


def main(
    *,
    once: bool = False,
    poll_interval: float = POLL_INTERVAL_S,
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
    stale_after_s: float = STALE_AFTER_S,
) -> int:
    settings = get_settings()
    from app.operations.logging import configure_logging

    configure_logging(settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: leave now; the run is re-queued by stalled-run recovery
            sys.exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        threading.Thread(target=_watch_parent, args=(int(parent), stop), daemon=True).start()
    run_worker(
        get_engine(),
        worker_id=worker_identity(),
        poll_interval=poll_interval,
        stop_event=stop,
        once=once,
        heartbeat_interval=heartbeat_interval,
        stale_after_s=stale_after_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
