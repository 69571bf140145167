"""Column helpers shared by every domain's models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column
from sqlmodel import Field

from app.db import UTCDateTime, utcnow


def ts_field(*, nullable: bool = False, default_now: bool = True, index: bool = False) -> Any:
    """A timezone-aware UTC timestamp column."""
    kwargs: dict[str, Any] = {}
    if default_now:
        kwargs["default_factory"] = utcnow
    else:
        kwargs["default"] = None
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index), **kwargs)


def in_list(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that a text column holds one of the values."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"
