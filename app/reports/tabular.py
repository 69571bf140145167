"""Rows of dicts → CSV or XLSX, shared by the reports and the spreadsheet exports.

Spreadsheet-safe: a CSV text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR) is
prefixed with an apostrophe (the importer strips it again, so exports round-trip); an XLSX text cell
is always stored as text, never as a formula. Lists are joined with "; ". XLSX has no time zones:
timestamps are written as UTC (the importer reads naive XLSX times as UTC).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

Format = Literal["csv", "xlsx"]
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
LIST_SEPARATOR = "; "


def media_type(fmt: Format) -> str:
    return XLSX_MEDIA_TYPE if fmt == "xlsx" else CSV_MEDIA_TYPE


def _plain(value: Any) -> Any:
    """A JSON-ish value as one spreadsheet cell: lists joined, None empty, enums as their value."""
    if isinstance(value, list | tuple):
        return LIST_SEPARATOR.join(str(v) for v in value)
    return value


def _csv_cell(value: Any) -> Any:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _xlsx_cell(sheet: Any, value: Any) -> Any:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    value = _plain(value)
    if isinstance(value, datetime):
        value = value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, str):
        # XML 1.0 cannot hold most control characters; a name that contains one must not break the export.
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
    cell = WriteOnlyCell(sheet, value=value)
    if isinstance(value, str):
        cell.data_type = "s"  # openpyxl would otherwise store "=…" as a live formula
    return cell


def to_xlsx(columns: Sequence[str], rows: Iterable[dict[str, Any]], *, sheet_title: str = "data") -> bytes:
    from openpyxl import Workbook  # a third of a second to import; CSV and JSON callers do not pay it

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=sheet_title[:31])
    sheet.append([_xlsx_cell(sheet, c) for c in columns])
    for row in rows:
        sheet.append([_xlsx_cell(sheet, row.get(c)) for c in columns])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def render(fmt: Format, columns: Sequence[str], rows: Iterable[dict[str, Any]], *, title: str) -> bytes:
    if fmt == "xlsx":
        return to_xlsx(columns, rows, sheet_title=title)
    return to_csv(columns, rows).encode("utf-8")
