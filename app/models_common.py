"""Column helpers shared by every domain's models."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator
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


# RFC 3339 with an offset: what `format: date-time` in the OpenAPI document promises. Pydantic alone would also
# take a Unix timestamp (a number, or a string of digits such as "0.5"), which the document does not allow.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339_only(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise ValueError("expected an RFC 3339 date-time with an offset, such as 2026-11-22T08:00:00Z")


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]
