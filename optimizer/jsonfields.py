"""JSON field readers shared by the Problem and Plan loaders: each names the offending field."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

MAX_QUANTITY = 10**9  # keeps the solver's integer capacities far from int64 overflow

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

T = TypeVar("T")


class ProblemError(ValueError):
    """Invalid Problem/Plan JSON; ``field`` is a JSON path such as ``demands[3].quantity``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- field readers


def _obj(v: Any, path: str, allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProblemError(path or "$", "must be an object")
    for k in v:
        if k not in allowed:
            raise ProblemError(_join(path, str(k)), "unknown field")
    for k in sorted(required):
        if k not in v:
            raise ProblemError(_join(path, k), "is required")
    return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _list(v: Any, path: str) -> list[Any]:
    if not isinstance(v, list):
        raise ProblemError(path, "must be a list")
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise ProblemError(path, "must be a non-empty string")
    return v


def _num(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProblemError(path, "must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise ProblemError(path, "must be finite")
    return f


def _whole(v: Any, path: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProblemError(path, "must be a whole number")
    if isinstance(v, float):
        if not math.isfinite(v) or not v.is_integer():
            raise ProblemError(path, "must be a whole number")
        v = int(v)
    if v < minimum:
        raise ProblemError(path, f"must be ≥ {minimum}")
    if v > MAX_QUANTITY:
        raise ProblemError(path, f"must be ≤ {MAX_QUANTITY}")
    return int(v)


def _in_range(v: Any, path: str, lo: float, hi: float) -> float:
    f = _num(v, path)
    if not lo <= f <= hi:
        raise ProblemError(path, f"must be between {lo:g} and {hi:g}")
    return f


@lru_cache(maxsize=4096)
def _parse_time(s: str) -> datetime | None:
    if not _RFC3339.match(s):
        return None
    try:
        t = datetime.fromisoformat(s.upper().replace(" ", "T"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else None


def _time(v: Any, path: str) -> datetime:
    if not isinstance(v, str):
        raise ProblemError(path, "must be an RFC 3339 timestamp string")
    t = _parse_time(v)
    if t is None:
        raise ProblemError(path, "must be an RFC 3339 timestamp with an offset (e.g. 2026-11-22T08:00:00Z)")
    return t


def _opt(d: dict[str, Any], key: str, path: str, read: Callable[[Any, str], T]) -> T | None:
    v = d.get(key)
    return None if v is None else read(v, _join(path, key))


def _read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ProblemError("", f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProblemError("", f"{path} is not valid JSON: {e}") from None


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix (microseconds only when present)."""
    t = t.astimezone(UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{t.microsecond:06d}Z" if t.microsecond else f"{base}Z"
