"""Structured logs: one JSON object per line on standard error, for our loggers and everyone else's.

`configure_logging(level)` sets up structlog and routes the standard library's logging (uvicorn,
alembic, SQLAlchemy warnings, `logging.getLogger("app.…")` in our modules) through the same JSON
renderer, so a log shipper sees one format. Every line carries `ts` (UTC, ISO 8601), `level`,
`logger`, `event`, `pid` and — inside a request — `request_id`. Calling it again only updates the level.

Secrets never reach the output: keys that name credentials are replaced, and values that look like
an API key or a bearer token are masked, as a last line of defence behind "never log them".
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from app.context import request_id_var

_SECRET_KEYS = frozenset({"authorization", "password", "secret", "token", "api_key", "key", "cookie", "set-cookie"})
_SECRET_VALUE = re.compile(r"(Bearer\s+)\S+|\bcs_[A-Za-z0-9_\-]{12,}", re.IGNORECASE)
REDACTED = "[redacted]"


def add_request_id(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    rid = request_id_var.get()
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


def add_pid(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    # Several processes write to one stream (`serve --workers N`, the embedded worker): tell them apart.
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _mask(value: str) -> str:
    return _SECRET_VALUE.sub(lambda m: (m.group(1) or "") + REDACTED, value)


def redact_secrets(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _mask(value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        add_pid,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]


def json_formatter() -> logging.Formatter:
    """The formatter every handler of ours uses (tests attach it to their own handler)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the call (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


_HANDLER_MARK = "_crisis_json_handler"


def configure_logging(level: str | int = "INFO") -> None:
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    if not any(getattr(h, _HANDLER_MARK, False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(json_formatter())
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Our request line replaces uvicorn's access log (which would log the raw path with its query).
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)


def bind_fields(target: MutableMapping[str, Any], **fields: Any) -> None:
    """Add the fields that are known (not None) — log lines without empty keys."""
    target.update({k: v for k, v in fields.items() if v is not None})
