"""SQLite mode: the API starts one worker as a child process (solves never run in the API process).

`embedded_worker` (setting `CRISIS_EMBEDDED_WORKER`):
  * `off`  — never start one (run `crisis-supply worker` yourself);
  * `on`   — always start one, on any database;
  * `auto` — start one when the database is SQLite and the app serves the configured database. An
    app built around an engine handed to `create_app` (the test suite) starts none; with PostgreSQL
    run `crisis-supply worker` processes instead (any number, on any machine).

The child is supervised: if it exits unexpectedly it is restarted (at most every few seconds); a run
it was solving is re-queued by stalled-run recovery. The child also stops when its parent dies.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from app.config import Settings

log = logging.getLogger("app.worker")

PARENT_PID_ENV = "CRISIS_WORKER_PARENT_PID"
RESTART_BACKOFF_S = 5.0
STOP_TIMEOUT_S = 10.0


def _same_database(engine: Engine, settings: Settings) -> bool:
    configured = make_url(settings.effective_database_url)
    if engine.url.get_backend_name() != configured.get_backend_name():
        return False
    if engine.url.get_backend_name() == "sqlite":
        return Path(engine.url.database or "").resolve() == Path(configured.database or "").resolve()
    return (engine.url.host, engine.url.port, engine.url.database) == (
        configured.host,
        configured.port,
        configured.database,
    )


def wanted(settings: Settings, engine: Engine) -> bool:
    mode = settings.embedded_worker.strip().lower()
    if mode == "off":
        return False
    if mode == "on":
        return True
    return engine.dialect.name == "sqlite" and _same_database(engine, settings)


class EmbeddedWorker:
    """One supervised `python -m app.cli worker` child process."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="embedded-worker", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, DATABASE_URL=self.database_url, CRISIS_EMBEDDED_WORKER="off")
        env[PARENT_PID_ENV] = str(os.getpid())
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)  # noqa: S603
        log.info("embedded worker started (pid %s)", proc.pid)
        return proc

    def start(self) -> EmbeddedWorker:
        self.process = self._spawn()
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            proc = self.process
            if proc is not None and proc.poll() is not None:
                log.warning("embedded worker exited with %s; restarting", proc.returncode)
                if self._stopping.wait(RESTART_BACKOFF_S):
                    return
                self.process = self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        self._supervisor.join(timeout=2.0)
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: the worker finishes or abandons its current run and exits
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # a run it held is re-queued by recovery on the next start
            proc.wait()


def start_embedded_worker(settings: Settings, engine: Engine) -> EmbeddedWorker | None:
    """Start the child worker when the settings and database call for one (see the module doc)."""
    if not wanted(settings, engine):
        return None
    return EmbeddedWorker(engine.url.render_as_string(hide_password=False)).start()


@contextmanager
def embedded_worker(settings: Settings, engine: Engine) -> Iterator[EmbeddedWorker | None]:
    """For the API's lifespan: the child runs while the app serves."""
    worker = start_embedded_worker(settings, engine)
    try:
        yield worker
    finally:
        if worker is not None:
            worker.stop()
