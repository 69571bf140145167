"""Form handling: HTML form fields → the API's request models, and errors → messages per field.

Field names in the forms are the API's own field paths (`site_id`, `lines[0].quantity`), so the
messages a form shows next to a field are exactly the ones the JSON API returns in problem+json
`errors[].field` / `message` for the same input — schema errors from pydantic, rule errors from the
services' `Unprocessable(field=...)`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from app.errors import DomainError

GENERAL = "_"  # errors that belong to no single field


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('lines', 0, 'quantity') → 'lines[0].quantity' (the API's convention, see app.errors)."""
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or GENERAL


def pydantic_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        errors.setdefault(field_path(err.get("loc", ())), str(err.get("msg", "invalid")))
    return errors


def domain_errors(exc: DomainError) -> dict[str, str]:
    if exc.status == 422:
        return {exc.field or GENERAL: exc.detail}
    return {GENERAL: f"{exc.title}: {exc.detail}"}


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional(form: FormData, name: str) -> str | None:
    """The field's text, or None when left empty (so the model's default applies)."""
    return text(form, name) or None


def utc_datetime(value: str | None) -> str | None:
    """A `datetime-local` value (no offset; the forms label such fields UTC) as RFC 3339 with +00:00.
    Anything else is passed through for the model to judge (it rejects what it cannot parse)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()
