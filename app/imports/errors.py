"""The row-level error report of a failed import, and the problem it becomes (422, nothing written)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from app.errors import DomainError

# A file where every row is wrong would otherwise answer with an enormous body.
MAX_REPORTED_ERRORS = 1000


@dataclass(frozen=True)
class RowError:
    """`row` is the spreadsheet row (the header is row 1); None for a problem with the whole file.
    `column` is the header name; None when the problem is not one cell's."""

    row: int | None
    column: str | None
    message: str


class ImportFailed(DomainError):
    status, slug, title = 422, "import-invalid", "The file has errors; nothing was imported"

    def __init__(self, kind: str, errors: Sequence[RowError]) -> None:
        ordered = sorted(errors, key=lambda e: (e.row or 0, e.column or "", e.message))
        rows = {e.row for e in ordered if e.row is not None}
        detail = f"{len(ordered)} error(s) in {len(rows)} row(s) of the {kind} file; nothing was imported"
        shown = [asdict(e) for e in ordered[:MAX_REPORTED_ERRORS]]
        super().__init__(detail, extra={"kind": kind, "error_count": len(ordered), "errors": shown})
        self.kind = kind
        self.errors = ordered


class UnsupportedMediaType(DomainError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"
