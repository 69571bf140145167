"""Share independent pieces of work with one forked helper process (the target machine has 2 cores).

OR-Tools' solvers hold the GIL, so threads would not overlap; a forked child inherits the arrays for
free and only sends back its (packed) results through a pipe. Results never depend on which process
computed them, so solves stay deterministic. Anything unusual — no ``fork`` on this platform, a
daemonic caller (which may not have children), a helper that fails or dies — falls back to doing the
work in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class ParallelOptions:
    workers: int = field(default_factory=default_workers)  # 1 = never fork; ≥ 2 = one forked helper
    min_arcs: int = 300_000  # below this much work, forking costs more than it saves


def fork_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    weights: Sequence[int],
    *,
    workers: int,
    min_weight: int,
    pack: Callable[[R], Any] = lambda r: r,
    unpack: Callable[[Any], R] = lambda p: p,
) -> list[R]:
    """``[fn(x) for x in items]``; with ``workers`` ≥ 2 and total weight ≥ ``min_weight`` a forked helper
    takes about half of the weight (largest items first). ``pack``/``unpack`` shrink what it sends back."""
    if (
        workers < 2
        or len(items) < 2
        or sum(weights) < min_weight
        or "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon
    ):
        return [fn(x) for x in items]
    load = [0, 0]
    mine: list[int] = []
    theirs: list[int] = []
    for i in sorted(range(len(items)), key=lambda i: (-weights[i], i)):  # longest first, to the lighter bin
        b = 0 if load[0] <= load[1] else 1
        load[b] += weights[i]
        (mine if b == 0 else theirs).append(i)
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    sys.stdout.flush()  # the child must not inherit (and later flush again) buffered output
    sys.stderr.flush()
    helper = ctx.Process(target=_helper, args=(sender, fn, pack, [items[i] for i in theirs]), daemon=True)
    try:
        helper.start()
    except (OSError, AssertionError, ValueError):
        receiver.close()
        sender.close()
        return [fn(x) for x in items]
    sender.close()
    packed: list[Any] | str | None = None
    try:
        results: dict[int, R] = {i: fn(items[i]) for i in mine}
        try:
            packed = receiver.recv()
        except (EOFError, OSError):
            packed = None
    finally:
        if packed is None and helper.is_alive():
            helper.terminate()  # this side failed, or the helper died: do not leave it running
        helper.join()
        receiver.close()
    for k, i in enumerate(theirs):
        results[i] = unpack(packed[k]) if isinstance(packed, list) else fn(items[i])
    return [results[i] for i in range(len(items))]


def _helper(conn: Connection, fn: Callable[[Any], Any], pack: Callable[[Any], Any], items: list[Any]) -> None:
    try:
        conn.send([pack(fn(x)) for x in items])
    except Exception as e:  # reported to the parent, which then does this share itself
        conn.send(f"{type(e).__name__}: {e}")
    finally:
        conn.close()
