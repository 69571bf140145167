"""Spreadsheet imports: validated as a whole, written all-or-nothing through the domain services.

Every row goes through the same schemas and service functions as the API (so the rules live in one
place and audit events are written), inside the caller's one transaction. Each row's write runs in a
savepoint: a row the services refuse is rolled back to the savepoint and reported, and the import
carries on so that the report lists every bad row. Rows later in the file see the rows before them
(same transaction), which is how references to earlier rows work. At the end, any error at all
raises `ImportFailed` and the caller's transaction rolls back: nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.errors import DomainError
from app.imports.errors import ImportFailed, RowError
from app.imports.parsers import Row, Table
from app.principal import Principal

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Progress = Callable[[int, int], None]
# field path (as the services and schemas name it) → (spreadsheet row, column)
Locator = Callable[[str | None], tuple[int, str | None]]
REQUIRED = "required: this cell may not be empty"
_INDEX = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class ImportResult:
    kind: str
    rows: int
    created: int


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """A pydantic error location as the API names fields: ("lines", 0, "quantity") → lines[0].quantity."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def base_field(field: str | None) -> str | None:
    """lines[0].quantity → lines; substitutes[1].sku → substitutes."""
    if field is None:
        return None
    return re.split(r"[.\[]", field, maxsplit=1)[0]


def as_text(value: Any) -> str | None:
    """A cell as text: spreadsheets store numeric-looking names and codes as numbers."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).strip() or None


def row_locator(row: Row, columns: dict[str, str], default: str | None = None) -> Locator:
    """Errors of a one-row write: the field's column (renamed where the column differs from the field)."""

    def locate(field: str | None) -> tuple[int, str | None]:
        base = base_field(field)
        if base is None:
            return row.number, default
        return row.number, columns.get(base, base)

    return locate


class Context:
    """One import's session, actor, progress and the errors found so far."""

    def __init__(self, session: Session, actor: Principal, total: int, progress: Progress | None) -> None:
        self.session = session
        self.actor = actor
        self.errors: list[RowError] = []
        self._total = total
        self._done = 0
        self._progress = progress

    def fail(self, row: int | None, column: str | None, message: str) -> None:
        self.errors.append(RowError(row, column, message))

    def failed_rows(self) -> set[int]:
        return {e.row for e in self.errors if e.row is not None}

    def advance(self, rows: int = 1) -> None:
        self._done += rows
        if self._progress is not None:
            self._progress(self._done, self._total)

    def on_behalf(self, role: str, organization_id: int) -> Principal:
        """Logistics (or the CLI) writing what an organisation's own key would write: the services apply
        the organisation's rules; the audit trail keeps the real key and says on whose behalf."""
        return Principal(
            key_id=self.actor.key_id,
            name=f"{self.actor.role}:{self.actor.name} on behalf of organization {organization_id}",
            role=role,
            organization_id=organization_id,
        )

    def _report(self, locate: Locator, field: str | None, message: str) -> None:
        row, column = locate(field)
        if field and column and field != column and field.startswith(column + "["):
            message = f"{field[len(column) :]}: {message}"  # which entry of a list cell, e.g. [1].penalty
        self.fail(row, column, message)

    def _report_validation(self, locate: Locator, exc: ValidationError) -> None:
        for err in exc.errors():
            field = field_path(err.get("loc", ()))
            message = REQUIRED if err.get("type") == "missing" else str(err.get("msg", "invalid"))
            self._report(locate, field, message)

    def validate(self, model: type[M], data: dict[str, Any], locate: Locator) -> M | None:
        """The API's schema applied to a row; errors reported at their cells. Empty cells are omitted
        so the schema's defaults apply. (An id a reference could not resolve is sent as 0, which the
        schemas accept, so only the reference's own error is reported for it.)"""
        try:
            return model.model_validate({k: v for k, v in data.items() if v is not None})
        except ValidationError as exc:
            self._report_validation(locate, exc)
            return None

    def attempt(self, write: Callable[[], T], locate: Locator) -> T | None:
        """Run one write in a savepoint; a refusal is reported and rolled back to the savepoint."""
        try:
            with self.session.begin_nested():
                return write()
        except ValidationError as exc:
            self._report_validation(locate, exc)
        except DomainError as exc:
            self._report(locate, exc.field, exc.detail)
        except IntegrityError:
            self._report(locate, None, "conflicts with data already stored")
        return None


def check_columns(kind: str, table: Table, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    known = set(required) | set(optional)
    errors = [
        RowError(table.header_row, name, f"unknown column; {kind} files have: {', '.join(required + optional)}")
        for name in table.columns
        if name not in known
    ]
    errors += [
        RowError(table.header_row, name, "required column is missing") for name in required if name not in table.columns
    ]
    if not table.rows:
        errors.append(RowError(None, None, "the file has a header but no data rows"))
    if errors:
        raise ImportFailed(kind, errors)


def run_import(
    session: Session, *, actor: Principal, kind: str, table: Table, progress: Progress | None = None
) -> ImportResult:
    """Validate and write every row of `table` as `kind`; raise ImportFailed (nothing kept) on any error.
    The caller owns the transaction: it must roll back when this raises."""
    from app.imports.kinds import KINDS  # the kinds import this module's helpers

    spec = KINDS[kind]
    check_columns(kind, table, spec.required, spec.optional + spec.export_only)
    ctx = Context(session, actor, len(table.rows), progress)
    created = spec.handler(ctx, table.rows)
    if ctx.errors:
        raise ImportFailed(kind, ctx.errors)
    session.flush()
    return ImportResult(kind=kind, rows=len(table.rows), created=created)
