"""API benchmark (``make bench-api``): issue 4's service targets on real processes over PostgreSQL.

1. **Trigger → plan ready**: the state-size scenario (``generate.py``) is loaded into a fresh
   PostgreSQL database (``load_scenario.py``); one ``crisis-supply serve`` process and one
   ``crisis-supply worker --poll-interval 0.1`` run against it. Timed from ``POST /v1/allocation-runs``
   until ``GET …/{id}`` says succeeded and ``GET …/plan`` answered 200 (body read) — snapshot, queue,
   solve, greedy baseline and storing the plan included — against ``python -m optimizer solve`` on
   the run's own snapshot (``GET …/problem``) as a whole process. Medians of ``--runs``; the ratio is
   the median of per-run ratios (each pair ran back to back, so background load affects both alike).
2. **Polling**: ``GET /v1/shipments/{id}`` with ``If-None-Match`` (→ 304) on that one API process vs.
   a bare FastAPI endpoint (``bare_app.py``, same uvicorn) under the same load generator (``wrk``,
   32 connections; a Python asyncio+httpx generator if wrk is missing), alternating rounds, medians.
   ``/healthz`` of the API (the whole middleware stack, no auth, no database) is shown for diagnosis.
   The shipment comes from a small scoped run approved through the API. A robustness row repeats
   the shipment measurement with ``--stall-connections`` (100) connections.
3. **p99 under a solve**: an open-loop mix of GETs (requests, shipment, organisations) at
   ``--mix-rate`` requests/s, idle and while the worker solves a state run (from the POST's answer
   until the run finished); the window of the POST itself (the snapshot is built in the API process)
   is reported separately.

Rate limits are off for the run. Every process started is stopped by its PID and the database is
dropped in ``finally`` blocks; every wait has a deadline.

Usage: ``.venv/bin/python benchmarks/api.py [--runs 3] [--seconds 10] [--rounds 3] [--mix-rate 30]``;
``BENCH_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) names a server where
the benchmark may create and drop the database ``crisis_bench_<pid>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from api_support import (  # noqa: E402
    TERMINAL,
    Load,
    Proc,
    Sample,
    admin,
    database_url,
    free_port,
    mix_during_run,
    mix_idle,
    pct,
    py_closed_loop,
    wrk,
)
from generate import generate  # noqa: E402
from load_scenario import load  # noqa: E402

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------ measurements


@dataclass
class RunTiming:
    post_s: float  # the POST's answer: snapshot built and run queued
    ready_s: float  # POST → succeeded and the plan read
    plan_get_s: float
    cli_s: float  # python -m optimizer solve on the same snapshot
    stats: dict[str, Any]
    lines: int


def wait_run(client: httpx.Client, run_id: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/v1/allocation-runs/{run_id}").raise_for_status().json()
        if run["status"] in TERMINAL:
            return dict(run)
        time.sleep(0.05)
    raise RuntimeError(f"run {run_id} did not finish within {timeout_s:.0f} s")


def trigger_and_wait(client: httpx.Client, body: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], float]:
    """POST a run and wait for it; the finished run and the POST's own duration."""
    started = time.perf_counter()
    answer = client.post("/v1/allocation-runs", json=body)
    if answer.status_code != 202:
        raise RuntimeError(f"trigger answered {answer.status_code}: {answer.text[:500]}")
    post_s = time.perf_counter() - started
    run = wait_run(client, answer.json()["id"], timeout_s)
    if run["status"] != "succeeded":
        raise RuntimeError(f"run {run['id']} {run['status']}: {run.get('error')}")
    return run, post_s


def trigger_to_plan(client: httpx.Client, time_limit_s: float, work: Path) -> RunTiming:
    from app.allocation.snapshot import solver_input

    started = time.perf_counter()
    run, post_s = trigger_and_wait(client, {"settings": {"time_limit_s": time_limit_s}}, 20 * time_limit_s)
    plan_started = time.perf_counter()
    plan = client.get(f"/v1/allocation-runs/{run['id']}/plan")
    plan.raise_for_status()
    lines = len(plan.json()["lines"])
    ready_s = time.perf_counter() - started
    plan_get_s = time.perf_counter() - plan_started
    problem = client.get(f"/v1/allocation-runs/{run['id']}/problem").raise_for_status().json()
    problem_file = work / f"problem-{run['id']}.json"
    problem_file.write_text(json.dumps(solver_input(problem)), encoding="utf-8")
    cli_started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "optimizer", "solve", str(problem_file), "-o", str(work / "cli-plan.json")],
        cwd=ROOT,
        check=True,
        timeout=20 * time_limit_s,
        stdout=subprocess.DEVNULL,
    )
    cli_s = time.perf_counter() - cli_started
    return RunTiming(post_s, ready_s, plan_get_s, cli_s, run.get("solver_stats") or {}, lines)


def small_shipment(client: httpx.Client, regions: list[str], item_ids: list[int]) -> int:
    """A shipment made the way users make one: a small scoped run, approved through the API."""
    for region in regions:
        for item_id in item_ids:
            run, _ = trigger_and_wait(client, {"scope": {"regions": [region], "item_ids": [item_id]}}, 120)
            plan = client.get(f"/v1/allocation-runs/{run['id']}/plan").raise_for_status()
            if not plan.json()["lines"]:
                continue
            approved = client.post(
                f"/v1/allocation-runs/{run['id']}/plan/approve", headers={"If-Match": plan.headers["ETag"]}
            ).raise_for_status()
            return int(approved.json()["shipment_ids"][0])
    raise RuntimeError("no scoped run produced a plan line to ship")


# ------------------------------------------------------------------------------ the benchmark


@dataclass
class Row:
    what: str
    value: str
    target: str = ""
    result: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def setup(server: str, name: str, work: Path, seed: int) -> tuple[str, Any, str]:
    """Fresh database with the state scenario and a logistics key: (url, Loaded, key)."""
    import app.models  # noqa: F401  (every table, for the key's audit event)
    from app.db import make_engine, transaction
    from app.keys.models import ApiKeyCreate
    from app.keys.service import create_key
    from app.migrate import upgrade
    from app.principal import SYSTEM

    admin(server, f'CREATE DATABASE "{name}"')
    url = database_url(server, name)
    upgrade(url)
    engine = make_engine(url)
    try:
        problem = generate("state", seed)
        (work / "generated.json").write_text(json.dumps(problem), encoding="utf-8")
        loaded = load(engine, problem)
        with transaction(engine) as session:
            _, secret = create_key(session, actor=SYSTEM, data=ApiKeyCreate(name="bench", role="logistics"))
    finally:
        engine.dispose()
    print(
        f"loaded: {len(loaded.line_ids)} request lines, {len(loaded.lot_ids)} lots, "
        f"{len(loaded.pledge_ids)} pledges in {loaded.seconds:.1f} s",
        flush=True,
    )
    return url, loaded, secret


def polling(args: argparse.Namespace, api: str, bare: str, auth: dict[str, str], shipment_id: int) -> list[Row]:
    gen: Callable[[str, dict[str, str], float, int], Load] = wrk if shutil.which("wrk") else py_closed_loop
    url = f"{api}/v1/shipments/{shipment_id}"
    etag = httpx.get(url, headers=auth).raise_for_status().headers["ETag"]
    assert httpx.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304
    targets = {
        "bare": (f"{bare}/bare", {}),
        "shipment": (url, {**auth, "If-None-Match": etag}),
        "healthz": (f"{api}/healthz", {}),
    }
    for target_url, headers in targets.values():  # warm-up: imports, caches, connection pools
        gen(target_url, headers, 2, args.connections)
    results: dict[str, list[Load]] = {k: [] for k in targets}
    for n in range(args.rounds):
        for key, (target_url, headers) in targets.items():
            results[key].append(gen(target_url, headers, args.seconds, args.connections))
            print(f"  round {n + 1} {key}: {results[key][-1]}", flush=True)
    med = {
        k: Load(*(statistics.median(getattr(x, f) for x in v) for f in ("rps", "p50_ms", "p99_ms", "errors")))
        for k, v in results.items()
    }
    ratio = med["shipment"].rps / med["bare"].rps
    how = f"{gen.__name__}, {args.connections} conns, median of {args.rounds} × {args.seconds:.0f} s"
    return [
        Row(f"bare FastAPI /bare req/s ({how})", f"{med['bare'].rps:,.0f}"),
        Row("GET /v1/shipments/{id} If-None-Match → 304 req/s", f"{med['shipment'].rps:,.0f}"),
        Row("  ratio shipment-304 / bare", f"{ratio:.0%}", "≥ 70%", verdict(ratio >= 0.70)),
        Row(
            "  p99 latency bare / shipment-304",
            f"{med['bare'].p99_ms:.1f} / {med['shipment'].p99_ms:.1f} ms",
            "reported",
        ),
        Row("  p50 latency bare / shipment-304", f"{med['bare'].p50_ms:.1f} / {med['shipment'].p50_ms:.1f} ms"),
        Row(
            "  (diagnosis) API /healthz req/s: middleware, no auth/DB",
            f"{med['healthz'].rps:,.0f} ({med['healthz'].rps / med['bare'].rps:.0%})",
        ),
        Row(
            "  errors (non-2xx/3xx, socket) bare / shipment / healthz",
            f"{med['bare'].errors:.0f} / {med['shipment'].errors:.0f} / {med['healthz'].errors:.0f}",
        ),
        *stall_check(args, gen, url, {**auth, "If-None-Match": etag}, med["shipment"].rps),
    ]


def stall_check(
    args: argparse.Namespace,
    gen: Callable[[str, dict[str, str], float, int], Load],
    url: str,
    headers: dict[str, str],
    rps_at_default: float,
) -> list[Row]:
    """Many pollers at once (beyond the issue's targets): with more concurrent requests than worker
    threads plus pooled connections, a process stalls until the pool's 30 s checkout timeout
    (docs/benchmarks-api.md)."""
    if not args.stall_connections:
        return []
    load = gen(url, headers, args.seconds, args.stall_connections)
    print(f"  {args.stall_connections} connections: {load}", flush=True)
    deadline = time.monotonic() + 120  # let any backlog drain before the next measurement
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=1.0).status_code == 304:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    ok = load.errors == 0 and load.rps >= 0.5 * rps_at_default
    return [
        Row(
            f"  (robustness) same at {args.stall_connections} connections: req/s, wrk errors",
            f"{load.rps:,.0f}, {load.errors:.0f}",
            "≥ 50% of it",
            verdict(ok),
        )
    ]


def trigger_rows(args: argparse.Namespace, client: httpx.Client, work: Path) -> list[Row]:
    timings = []
    for n in range(args.runs):
        t = trigger_to_plan(client, args.time_limit, work)
        timings.append(t)
        print(
            f"  run {n + 1}: POST {t.post_s:.2f} s, plan ready {t.ready_s:.2f} s (plan GET {t.plan_get_s:.2f} s, "
            f"{t.lines} lines), CLI {t.cli_s:.2f} s; stats {json.dumps(t.stats)}",
            flush=True,
        )

    def med(values: Any) -> float:
        return float(statistics.median(values))

    ratios = [t.ready_s / t.cli_s for t in timings]
    ratio = med(ratios)
    worker = med(float(t.stats.get("worker_wall_s") or 0) for t in timings)
    store = med(float(t.stats.get("store_wall_s") or 0) for t in timings)
    rest = med(
        t.ready_s
        - t.post_s
        - float(t.stats.get("worker_wall_s") or 0)
        - float(t.stats.get("store_wall_s") or 0)
        - t.plan_get_s
        for t in timings
    )
    return [
        Row(f"trigger → plan ready, state size (median of {args.runs})", f"{med(t.ready_s for t in timings):.2f} s"),
        Row("  POST (snapshot built in the API process)", f"{med(t.post_s for t in timings):.2f} s"),
        Row("  worker: load + solve, greedy baseline beside it", f"{worker:.2f} s"),
        Row(
            "    solver alone (solver_stats.wall_s)", f"{med(float(t.stats.get('wall_s') or 0) for t in timings):.2f} s"
        ),
        Row(
            "    greedy baseline (its own wall, in a niced helper)",
            f"{med(float(t.stats.get('baseline_wall_s') or 0) for t in timings):.2f} s",
        ),
        Row("  worker: store the plan (solver_stats.store_wall_s)", f"{store:.2f} s"),
        Row("  rest: queue, claim, commit, status polls", f"{rest:.2f} s"),
        Row("  GET …/plan (whole body read)", f"{med(t.plan_get_s for t in timings):.2f} s"),
        Row("python -m optimizer solve, same snapshot (median)", f"{med(t.cli_s for t in timings):.2f} s"),
        Row(
            "  ratio trigger→plan / optimizer (median of per-run ratios: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")",
            f"{ratio:.2f}×",
            "≤ 2×",
            verdict(ratio <= 2.0),
        ),
    ]


def mix_rows(args: argparse.Namespace, api: str, auth: dict[str, str], paths: list[str]) -> list[Row]:
    idle = asyncio.run(mix_idle(api, auth, paths, args.mix_rate, args.mix_idle_seconds))
    busy: list[Sample] = []
    trigger: list[Sample] = []
    for _ in range(args.mix_runs):
        samples, (sent, answered, finished) = asyncio.run(
            mix_during_run(api, auth, paths, args.mix_rate, 20 * args.time_limit)
        )
        idle += [s for s in samples if s[0] < sent]
        trigger += [s for s in samples if sent <= s[0] < answered]
        busy += [s for s in samples if answered <= s[0] < finished]
        print(f"  mix run: POST {answered - sent:.1f} s, then solving {finished - answered:.1f} s", flush=True)
    bad = Counter(s[2] for s in idle + busy + trigger if s[2] != 200)
    idle_ms, busy_ms, trigger_ms = ([s[1] for s in group] for group in (idle, busy, trigger))
    p99_idle, p99_busy = pct(idle_ms, 0.99), pct(busy_ms, 0.99)
    label = f"{args.mix_rate:.0f}/s open loop: {', '.join(paths)}"
    return [
        Row(f"mix of GETs ({label})", ""),
        Row(f"  p50 / p99 idle ({len(idle_ms)} requests)", f"{pct(idle_ms, 0.5):.1f} / {p99_idle:.1f} ms"),
        Row(
            f"  p50 / p99 while the worker solves ({len(busy_ms)} requests)",
            f"{pct(busy_ms, 0.5):.1f} / {p99_busy:.1f} ms",
            "p99 ≤ 3× idle",
            verdict(p99_busy <= 3 * p99_idle),
        ),
        Row(
            f"  (informative) p50 / p99 while the POST builds the snapshot ({len(trigger_ms)})",
            f"{pct(trigger_ms, 0.5):.1f} / {pct(trigger_ms, 0.99):.1f} ms",
        ),
        Row(
            "  answers other than 200 (status: count; 0 = no answer)",
            ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none",
        ),
    ]


def print_table(rows: list[Row]) -> None:
    if not rows:
        return
    width = max(len(r.what) for r in rows)
    vw = max(len(r.value) for r in rows)
    print(f"\n{'measurement':<{width}}  {'value':>{vw}}  {'target':<14} result")
    for r in rows:
        print(f"{r.what:<{width}}  {r.value:>{vw}}  {r.target:<14} {r.result}".rstrip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, help="state runs for trigger → plan ready")
    ap.add_argument("--time-limit", type=float, default=120.0, help="solver time limit of each run (s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each polling measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating polling rounds (bare, shipment, healthz)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--stall-connections", type=int, default=100, help="robustness check (0: skip)")
    ap.add_argument("--mix-rate", type=float, default=30.0, help="requests/s of the GET mix")
    ap.add_argument("--mix-idle-seconds", type=float, default=20.0)
    ap.add_argument("--worker-nice", type=int, default=0, help="start the worker under `nice -n N` (0: as is)")
    ap.add_argument("--mix-runs", type=int, default=2, help="state runs measured under the GET mix")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: trigger, polling, mix")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    server = os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER)
    name = f"crisis_bench_{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="crisis-bench-api-"))
    procs: list[Proc] = []
    rows: list[Row] = []
    try:
        url, loaded, secret = setup(server, name, work, args.seed)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CRISIS_DATA_DIR": str(work / "data"),
            "CRISIS_EMBEDDED_WORKER": "off",
            "CRISIS_RATE_LIMIT_READS_PER_MINUTE": "0",
            "CRISIS_RATE_LIMIT_WRITES_PER_MINUTE": "0",
            "CRISIS_AUTH_FAILURES_PER_MINUTE": "0",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        api_port, bare_port = free_port(), free_port()
        api, bare = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
        procs.append(Proc("api", [str(BIN / "crisis-supply"), "serve", "--port", str(api_port)], env, work))
        nice = ["nice", "-n", str(args.worker_nice)] if args.worker_nice else []
        worker_cmd = [*nice, str(BIN / "crisis-supply"), "worker", "--poll-interval", "0.1"]
        procs.append(Proc("worker", worker_cmd, env, work))
        uvicorn_args = f"bare_app:app --app-dir benchmarks --port {bare_port} --log-level warning --no-access-log"
        procs.append(Proc("bare", [sys.executable, "-m", "uvicorn", *uvicorn_args.split()], env, work))
        procs[0].wait_http(f"{api}/healthz")
        procs[2].wait_http(f"{bare}/bare")
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=api, headers=auth, timeout=600.0) as client:
            regions = sorted(loaded.regions, key=lambda r: len(loaded.regions[r]))
            shipment_id = small_shipment(client, regions, [loaded.item_ids[s] for s in ("FACE_SHIELD", "KN95")])
            print(f"shipment {shipment_id} created through a small approved plan", flush=True)
            if "polling" not in skip:
                print("polling throughput …", flush=True)
                rows += polling(args, api, bare, auth, shipment_id)
            if "trigger" not in skip:
                print("trigger → plan ready …", flush=True)
                rows += trigger_rows(args, client, work)
        if "mix" not in skip:
            print("p99 of a GET mix, idle and during a solve …", flush=True)
            paths = ["/v1/requests?limit=50", f"/v1/shipments/{shipment_id}", "/v1/organizations"]
            rows += mix_rows(args, api, auth, paths)
        print_table(rows)
        return 1 if args.strict and any(r.result == "FAIL" for r in rows) else 0
    except Exception:
        for p in procs:
            print(f"--- {p.name} log (tail) ---\n{p.tail()}", file=sys.stderr)
        raise
    finally:
        for p in reversed(procs):
            p.stop()
        try:
            admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001  (do not hide the benchmark's own error)
            print(f"could not drop database {name}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
