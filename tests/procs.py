"""Real API and worker processes for multi-process tests.

`Processes` starts `uvicorn app.asgi:app` and `crisis-supply worker` subprocesses against one
DATABASE_URL (APIs on free local ports), waits for readiness on /healthz, and stops everything it
started — by PID, never by name — when the `with` block ends, however it ends. Each process writes
its output to a log file whose tail is attached to any start-up failure.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

# Every process still running, so an interpreter exit that skips teardown still ends them (by PID).
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


atexit.register(_kill_leftovers)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} is not an API process"
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def kill_hard(self) -> None:
        """SIGKILL: the process gets no chance to clean up (what a crash or OOM kill looks like)."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=STOP_TIMEOUT_S)
        _LIVE.pop(self.pid, None)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        _LIVE.pop(self.pid, None)


class Processes:
    """A group of API and worker processes on one database; a context manager that stops them all."""

    def __init__(self, database_url: str, log_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.extra_env = env or {}
        self.procs: list[Proc] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "CRISIS_TEST_SOLVE_PAUSE_FILE"}}
        env.update(
            DATABASE_URL=self.database_url,
            CRISIS_EMBEDDED_WORKER="off",
            CRISIS_DATA_DIR=str(self.log_dir / "data"),
            CRISIS_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None, port: int | None) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
                [sys.executable, *args],
                cwd=ROOT,
                env=self._env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _LIVE[popen.pid] = popen
        proc = Proc(name=name, popen=popen, log_path=log_path, port=port)
        self.procs.append(proc)
        return proc

    def start_api(self, *, env: dict[str, str] | None = None) -> Proc:
        """`uvicorn app.asgi:app` on a free port; returns once /healthz answers 200."""
        [proc] = self.start_apis(1, env=env)
        return proc

    def start_apis(self, n: int, *, env: dict[str, str] | None = None) -> list[Proc]:
        """n API processes started side by side (start-up is mostly imports), each waited for."""
        procs = []
        for _ in range(n):
            port = free_port()
            args = ["-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
            procs.append(self._spawn("api", args, env, port))
        for proc in procs:
            self.wait_healthy(proc)
        return procs

    def start_worker(self, *, poll_interval: float = 0.2, env: dict[str, str] | None = None) -> Proc:
        """`crisis-supply worker` (the CLI entry point); settings such as the heartbeat interval and
        stale-after threshold come from the environment (CRISIS_WORKER_HEARTBEAT_S, …_STALE_AFTER_S)."""
        args = ["-m", "app.cli", "worker", "--poll-interval", str(poll_interval)]
        return self._spawn("worker", args, env, None)

    def wait_healthy(self, proc: Proc, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} (pid {proc.pid}) exited during start-up:\n{proc.log_tail()}")
            try:
                if httpx.get(f"{proc.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name} (pid {proc.pid}) not healthy after {timeout_s} s:\n{proc.log_tail()}")

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except BaseException as exc:  # noqa: BLE001  (stop the others anyway, then report)
                errors.append(exc)
        self.procs.clear()
        if errors:
            raise errors[0]

    def logs(self) -> dict[str, Any]:
        return {f"{p.name}-{p.pid}": p.log_tail() for p in self.procs}
