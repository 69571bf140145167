"""Helpers for the operations, backup and CLI tests: the real console script in subprocesses, empty
databases on either backend, servers on free ports, and row-by-row table dumps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from tests.conftest import _create_pg_database, _drop_pg_database

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("crisis-supply"))
# Variables a developer's shell or CI may set that would point a subprocess at another database.
_SCRUBBED = ("DATABASE_URL", "CRISIS_DATABASE_URL", "CRISIS_DATA_DIR", "PROMETHEUS_MULTIPROC_DIR")


def cli_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["CRISIS_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


@contextmanager
def empty_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = "empty") -> Iterator[str]:
    """The URL of a database with nothing in it (no tables) on the given backend; dropped afterwards."""
    if backend == "sqlite":
        directory = tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{directory / 'crisis-supply.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    url = _create_pg_database(base)
    try:
        yield url
    finally:
        _drop_pg_database(base, url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def background(command: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process (own process group, stderr to a file); stopped with SIGTERM, then SIGKILL."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            list(command), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)


def table_contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the schema (and alembic_version), every row, in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{table.name}" ORDER BY {order}'))]
        out["alembic_version"] = [tuple(r) for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
    return out


@contextmanager
def logs_on_failure(*logs: Path) -> Iterator[None]:
    """A failing assertion in a multi-process test shows what the processes wrote."""
    try:
        yield
    except Exception as exc:  # not BaseException: a pytest.skip must stay a skip
        tails = [f"--- {p.name}:\n{p.read_text()[-4000:]}" for p in logs if p.exists()]
        raise AssertionError(f"{exc!r}\n" + "\n".join(tails)) from exc
