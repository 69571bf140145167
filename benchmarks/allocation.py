"""Allocation benchmark (``make bench``): the optimizer against the SPEC §3.5 baselines.

For each scenario size (``benchmarks/generate.py``) it prints

* the feasible arcs, and the wall and CPU time (median of ``--runs``) and peak memory of
  ``python -m optimizer solve problem.json -o plan.json`` as a whole process — JSON in and out
  included — and the same with ``--baseline greedy``. Memory is shown two ways: the largest single
  process's RSS high-water mark (exact, from ``os.wait4``) and the highest sum of PSS over the process
  tree, sampled every 50 ms (the solver may fork a helper; PSS counts shared pages once);
* whether ``python -m optimizer check`` accepts the optimizer's plan (and how long that took);
* a KPI table, optimizer vs greedy vs proportional: per tier units, min fill, min level, min level over
  reachable demands (those with at least one feasible arc) and Jain's index; unit-km and cost;
* the SPEC §3.5 quality test: in the highest tier where the optimizer's quantities differ from
  greedy's, its units and its min level over reachable demands are ≥ greedy's.

Usage: ``.venv/bin/python benchmarks/allocation.py [--sizes small,state,stress] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from generate import SIZES, generate  # noqa: E402

from optimizer.io import load_plan_file, load_problem_file  # noqa: E402
from optimizer.model import PRIORITIES, Plan, Problem  # noqa: E402
from optimizer.network import build_arcs  # noqa: E402


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system of the whole tree: stays meaningful when other work shares the machine
    peak_mib: float  # the largest single process's RSS high-water mark (kernel, via wait4)
    tree_mib: float  # the highest sampled sum of PSS over the process and its children (forked helpers)
    exit_code: int


def _tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root`` and its descendants (shared copy-on-write pages counted once)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, ValueError):
            continue
    return total


def run_child(args: list[str], log: Path) -> Run:
    """Run ``python -m optimizer …`` to completion: wall, CPU and peak memory of the process tree."""
    started = time.perf_counter()
    tree_kib = 0
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "optimizer", *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if Path("/proc").is_dir():
                tree_kib = max(tree_kib, _tree_pss_kib(proc.pid))
            time.sleep(0.05)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    cpu = usage.ru_utime + usage.ru_stime  # includes descendants the child waited for
    return Run(wall, cpu, usage.ru_maxrss / 1024.0, tree_kib / 1024.0, proc.returncode)  # ru_maxrss: KiB


def timed(args: list[str], runs: int, log: Path) -> Run:
    """Median wall and CPU time over ``runs``, the highest peak memory."""
    results = [run_child(args, log) for _ in range(runs)]
    bad = [r for r in results if r.exit_code != 0]
    if bad:
        raise SystemExit(f"optimizer {' '.join(args)} exited {bad[0].exit_code}:\n{log.read_text()[-2000:]}")
    return Run(statistics.median(r.wall_s for r in results), statistics.median(r.cpu_s for r in results),
               max(r.peak_mib for r in results), max(r.tree_mib for r in results), 0)


def tier_rows(problem: Problem, plan: Plan, reachable: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Per tier: units, min fill, min level, min level over reachable demands, Jain's index."""
    got = {r.id: r.allocated for r in plan.demands}
    out: dict[str, tuple[float, ...]] = {}
    for tier in PRIORITIES:
        idx = [j for j, d in enumerate(problem.demands) if d.priority == tier]
        if not idx:
            continue
        x = np.array([got[problem.demands[j].id] for j in idx], dtype=np.float64)
        q = np.array([problem.demands[j].quantity for j in idx], dtype=np.float64)
        w = np.array([problem.demands[j].equity_weight for j in idx])
        reach = reachable[idx]
        level = x / (w * q)
        fill = x / q
        jain = fill.sum() ** 2 / (len(idx) * (fill**2).sum()) if fill.any() else 1.0
        out[tier] = (x.sum(), fill.min(), level.min(), level[reach].min() if reach.any() else float("nan"), jain)
    return out


def quality(problem: Problem, fair: Plan, base: Plan, reachable: np.ndarray) -> str:
    """SPEC §3.5: in the highest tier where the plans differ, fair units and reachable min level ≥ base."""
    a = {r.id: r.allocated for r in fair.demands}
    b = {r.id: r.allocated for r in base.demands}
    fr, br = tier_rows(problem, fair, reachable), tier_rows(problem, base, reachable)
    for tier in PRIORITIES:
        if tier in fr and any(a[d.id] != b[d.id] for d in problem.demands if d.priority == tier):
            ok = fr[tier][0] >= br[tier][0] and fr[tier][3] >= br[tier][3] - 1e-12
            return f"{'PASS' if ok else 'FAIL'} (first differing tier: {tier})"
    return "PASS (identical quantities)"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def bench(size: str, runs: int, work: Path, seed: int) -> None:
    problem_path = work / f"{size}.json"
    problem_path.write_text(json.dumps(generate(size, seed)))
    problem = load_problem_file(problem_path)
    arcs = build_arcs(problem)
    reachable = np.diff(arcs.demand_start) > 0
    log = work / f"{size}.log"
    plans = {name: work / f"{size}-{name}.json" for name in ("optimizer", "greedy", "proportional")}
    solved = timed(["solve", str(problem_path), "-o", str(plans["optimizer"])], runs, log)
    greedy = timed(["solve", str(problem_path), "-o", str(plans["greedy"]), "--baseline", "greedy"], runs, log)
    timed(["solve", str(problem_path), "-o", str(plans["proportional"]), "--baseline", "proportional"], 1, log)
    chk = run_child(["check", str(problem_path), str(plans["optimizer"])], log)
    loaded = {name: load_plan_file(path) for name, path in plans.items()}

    print(f"\n== {size}: {len(problem.demands):,} demand lines, {len(problem.sources):,} sources, "
          f"{arcs.n:,} feasible arcs, {int(reachable.sum()):,} reachable demands ==")
    print(table(["process", "wall s (median)", "cpu s (median)", "peak RSS MiB", "tree PSS MiB"], [
        [name, f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}", f"{r.peak_mib:.0f}", f"{r.tree_mib:.0f}"]
        for name, r in (("optimizer solve", solved), ("greedy baseline", greedy), ("optimizer check", chk))
    ]))
    verdict = "PASS" if chk.exit_code == 0 else f"FAIL (exit {chk.exit_code}): {log.read_text()[:500]}"
    print(f"checker on the optimizer plan: {verdict}")
    rows = []
    for name, plan in loaded.items():
        tiers = tier_rows(problem, plan, reachable)
        for tier, (units, min_fill, min_level, reach_level, jain) in tiers.items():
            rows.append([name, tier, f"{units:,.0f}", f"{min_fill:.3f}", f"{min_level:.3f}", f"{reach_level:.3f}",
                         f"{jain:.3f}", "", ""])
        cost = plan.kpis.transport_cost + plan.kpis.substitution_penalty
        rows.append([name, "all", f"{sum(t[0] for t in tiers.values()):,.0f}", "", "", "", "",
                     f"{plan.kpis.unit_km:,.0f}", f"{cost:,.0f}"])
    print(table(["plan", "tier", "units", "min fill", "min level", "min lvl reach", "Jain", "unit-km", "cost"],
                rows))
    print(f"quality vs greedy: {quality(problem, loaded['optimizer'], loaded['greedy'], reachable)}")
    print(f"quality vs proportional: {quality(problem, loaded['optimizer'], loaded['proportional'], reachable)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="optimizer vs baselines on synthetic scenarios")
    ap.add_argument("--sizes", default="small,state,stress", help=f"comma-separated, from {', '.join(SIZES)}")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="write problems and plans here instead of a temporary folder")
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        ap.error(f"unknown size(s): {', '.join(unknown)}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, runs={args.runs}, seed={args.seed}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            bench(size, args.runs, work, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
