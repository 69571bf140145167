"""Reading a spreadsheet: CSV (UTF-8, header row) or XLSX (first sheet, header row) → a `Table`.

Header names are matched case-insensitively, with spaces and dashes read as underscores. Empty cells
are None; text is stripped. Fully empty rows are skipped (their numbers still count, so row numbers
are the ones a spreadsheet shows). A CSV text cell an export protected from formula execution
("'=…", "'-…") gets its apostrophe back off. XLSX date cells carry no time zone: they are read as UTC.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from app.imports.errors import ImportFailed, RowError
from app.reports.tabular import FORMULA_PREFIXES, XLSX_MEDIA_TYPE

FileFormat = Literal["csv", "xlsx"]
XLSX_MAGIC = b"PK\x03\x04"
MAX_ROWS = 100_000
CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})


@dataclass(frozen=True)
class Row:
    number: int
    values: dict[str, Any]

    def get(self, column: str) -> Any:
        return self.values.get(column)


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[Row]
    header_row: int = 1


def normalize_header(name: Any) -> str:
    return "_".join(str(name or "").strip().lower().replace("-", " ").split())


def detect_format(data: bytes, *, filename: str | None = None, media_type: str | None = None) -> FileFormat:
    """XLSX files are zip archives; anything else is read as CSV text."""
    if data.startswith(XLSX_MAGIC):
        return "xlsx"
    claims_xlsx = (filename or "").lower().endswith(".xlsx") or media_type == XLSX_MEDIA_TYPE
    if claims_xlsx:
        raise ImportFailed("uploaded", [RowError(None, None, "the file is not a valid XLSX workbook")])
    return "csv"


def _csv_cell(value: str) -> str | None:
    value = value.strip()
    if value[:1] == "'" and value[1:2] and value[1:].startswith(FORMULA_PREFIXES):
        value = value[1:]
    return value or None


def _xlsx_cell(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    return value


def _csv_rows(data: bytes) -> Iterator[list[Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed("uploaded", [RowError(None, None, "the file is not UTF-8 text")]) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for record in reader:
            yield [_csv_cell(cell) for cell in record]
    except csv.Error as exc:
        raise ImportFailed("uploaded", [RowError(reader.line_num, None, f"not valid CSV: {exc}")]) from exc


def _xlsx_rows(data: bytes) -> Iterator[list[Any]]:
    from openpyxl import load_workbook  # a second or two to import; only XLSX uploads pay for it

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ImportFailed("uploaded", [RowError(None, None, "the file is not a readable XLSX workbook")]) from exc
    try:
        if not workbook.worksheets:
            return
        for record in workbook.worksheets[0].iter_rows(values_only=True):
            yield [_xlsx_cell(cell) for cell in record]
    finally:
        workbook.close()


def _header(number: int, cells: list[Any]) -> tuple[list[str], list[RowError]]:
    names = [normalize_header(c) for c in cells]
    errors: list[RowError] = []
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            errors.append(RowError(number, name, "this column appears twice"))
        seen.add(name)
    return names, errors


def _table(records: Iterable[list[Any]]) -> Table:
    numbered = enumerate(records, start=1)
    header: tuple[int, list[Any]] | None = None
    for number, cells in numbered:
        if any(c is not None for c in cells):  # blank lines above the header are tolerated
            header = (number, cells)
            break
    if header is None:
        raise ImportFailed("uploaded", [RowError(None, None, "the file is empty: expected a header row")])
    names, errors = _header(*header)
    rows: list[Row] = []
    for number, cells in numbered:
        if all(c is None for c in cells):
            continue
        if len(rows) >= MAX_ROWS:
            raise ImportFailed("uploaded", [RowError(number, None, f"too many rows: at most {MAX_ROWS} per file")])
        values: dict[str, Any] = {}
        for index, cell in enumerate(cells):
            name = names[index] if index < len(names) else ""
            if not name:
                if cell is not None:
                    errors.append(RowError(number, None, f"a value in column {index + 1}, which has no header"))
                continue
            values[name] = cell
        rows.append(Row(number=number, values=values))
    if errors:
        raise ImportFailed("uploaded", errors)
    return Table(columns=[n for n in names if n], rows=rows, header_row=header[0])


def read_table(data: bytes, *, filename: str | None = None, media_type: str | None = None) -> Table:
    fmt = detect_format(data, filename=filename, media_type=media_type)
    return _table(_xlsx_rows(data) if fmt == "xlsx" else _csv_rows(data))
