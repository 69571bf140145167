"""Command line: ``python -m optimizer solve problem.json [-o plan.json] [--time-limit S]
[--baseline greedy|proportional]`` and ``python -m optimizer check problem.json plan.json``.

Exit codes: 0 success (for ``check``: the plan passes); 1 the plan fails the check; 2 bad usage or an
invalid input file (one line on stderr naming the file and the offending field, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimizer.io import ProblemError, load_plan_file, load_problem_file, plan_to_dict
from optimizer.model import Plan, Problem
from optimizer.solve import solve

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optimizer", description="crisis-supply allocation optimizer")
    sub = parser.add_subparsers(dest="command", required=True)
    p_solve = sub.add_parser("solve", help="solve a Problem JSON file and print the Plan JSON")
    p_solve.add_argument("problem", type=Path)
    p_solve.add_argument("-o", "--output", type=Path, help="write the plan here instead of standard output")
    p_solve.add_argument("--time-limit", type=_positive, metavar="S", help="seconds (overrides settings.time_limit_s)")
    p_solve.add_argument("--baseline", choices=("greedy", "proportional"), help="a comparison plan instead")
    p_check = sub.add_parser("check", help="verify a plan against its problem (exit 0 only when it passes)")
    p_check.add_argument("problem", type=Path)
    p_check.add_argument("plan", type=Path)
    p_check.add_argument(
        "--no-certificate",
        action="store_true",
        help="check feasibility and reported numbers only (baseline plans are not fair by design)",
    )
    return parser


def _load_problem(path: Path) -> Problem:
    try:
        return load_problem_file(path)
    except ProblemError as e:
        raise _InputError(path, e) from None


class _InputError(Exception):
    def __init__(self, path: Path, error: ProblemError) -> None:
        # Without a field the error is about the file itself, and its message already names it.
        super().__init__(f"{path}: {error.field}: {error.message}" if error.field else error.message)


def _baseline(name: str, problem: Problem) -> Plan:
    # Imported lazily (only this command needs it) and by name, so this module type-checks on its own.
    baselines = importlib.import_module("optimizer.baselines")
    plan: Plan = getattr(baselines, name)(problem)
    return plan


def _cmd_solve(args: argparse.Namespace) -> int:
    problem = _load_problem(args.problem)
    plan = _baseline(args.baseline, problem) if args.baseline else solve(problem, time_limit_s=args.time_limit)
    text = json.dumps(plan_to_dict(plan), ensure_ascii=False, separators=(",", ":")) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from optimizer.check import check

    problem = _load_problem(args.problem)
    try:
        plan = load_plan_file(args.plan)
    except ProblemError as e:
        raise _InputError(args.plan, e) from None
    report: Any = check(problem, plan, certificate=not args.no_certificate)
    for line in report.errors:
        print(line, file=sys.stderr)
    print("ok" if report.ok else f"FAILED: {len(report.errors)} problem(s)")
    return EXIT_OK if report.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _cmd_solve(args) if args.command == "solve" else _cmd_check(args)
    except _InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
