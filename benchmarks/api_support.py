"""Processes, scratch databases and HTTP load generators for ``benchmarks/api.py``.

``wrk`` drives the polling comparison (closed loop, N connections); ``py_closed_loop`` is the same
measurement in Python for machines without wrk; ``open_loop`` sends GETs at a fixed rate whatever the
answers do, so a slow answer cannot hide later ones (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "failed", "cancelled")

# ------------------------------------------------------------------------------ processes, database


class Proc:
    """A child process with its output in a log file; stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_http(self, url: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin(server_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  (a fixed statement with our own database name)


def database_url(server_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of the values, in their unit."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


# ------------------------------------------------------------------------------ load generators


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> Load:
    # Answers slower than 5 s count as errors (wrk only counts a timeout while the run lasts).
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def latency(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Load(float(rps.group(1)) if rps else 0.0, latency("50"), latency("99"), errors)


def py_closed_loop(url: str, headers: dict[str, str], seconds: float, connections: int) -> Load:
    """Fallback when wrk is not installed: `connections` clients sending back to back."""

    async def main() -> Load:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=5.0) as client:
            end = time.perf_counter() + seconds

            async def one() -> None:
                nonlocal errors
                while time.perf_counter() < end:
                    t = time.perf_counter()
                    try:
                        errors += (await client.get(url)).status_code >= 400
                    except httpx.HTTPError:  # a timeout counts as an error, as in wrk
                        errors += 1
                    latencies.append((time.perf_counter() - t) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(connections)))
            elapsed = time.perf_counter() - started
        return Load(len(latencies) / elapsed, pct(latencies, 0.5), pct(latencies, 0.99), errors)

    return asyncio.run(main())


Sample = tuple[float, float, int]  # (send time, latency ms, status)


async def open_loop(
    base: str, headers: dict[str, str], paths: list[str], rate: float, stop: asyncio.Event
) -> list[Sample]:
    """GETs round-robin over `paths`, one every 1/rate s whatever the answers do (no coordinated
    omission: latency counts from the scheduled time), until `stop` is set."""
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0) as client:

        async def one(path: str, due: float) -> None:
            try:
                status = (await client.get(path)).status_code
            except httpx.HTTPError:
                status = 0
            samples.append((due, (time.perf_counter() - due) * 1000, status))

        start, n = time.perf_counter(), 0
        while not stop.is_set():
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(paths[n % len(paths)], due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return samples


async def mix_idle(base: str, headers: dict[str, str], paths: list[str], rate: float, seconds: float) -> list[Sample]:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return await open_loop(base, headers, paths, rate, stop)


async def mix_during_run(
    base: str, headers: dict[str, str], paths: list[str], rate: float, timeout_s: float
) -> tuple[list[Sample], tuple[float, float, float]]:
    """The mix while one full-scope run is triggered and solved; (POST sent, POST answered, finished)."""
    stop = asyncio.Event()
    load_task = asyncio.create_task(open_loop(base, headers, paths, rate, stop))
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout_s) as client:
            await asyncio.sleep(1.0)  # the mix is running before the trigger
            sent = time.perf_counter()
            answer = (await client.post("/v1/allocation-runs", json={})).raise_for_status()
            answered = time.perf_counter()
            run_id, deadline = answer.json()["id"], time.monotonic() + timeout_s
            while (await client.get(f"/v1/allocation-runs/{run_id}")).json()["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} did not finish within {timeout_s:.0f} s")
                await asyncio.sleep(0.1)
            finished = time.perf_counter()
    finally:
        stop.set()
    return await load_task, (sent, answered, finished)
