"""`crisis-supply import KIND FILE` and `crisis-supply export KIND`: the same services as the API.

The command line is the operator's tool: it acts as the system principal (any kind), in one
transaction, with a progress bar on standard error; a failed import prints every bad cell and exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from sqlalchemy.exc import SQLAlchemyError

import app.models  # noqa: F401  (every table, so foreign keys between domains resolve)
from app.config import get_settings
from app.db import get_engine, transaction
from app.errors import DomainError
from app.imports import parsers, service
from app.imports.errors import ImportFailed
from app.imports.kinds import KINDS
from app.principal import Principal
from app.reports import tabular

CLI_PRINCIPAL = Principal(key_id=None, name="command line", role="admin", organization_id=None)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _print_errors(console: Console, failure: ImportFailed) -> None:
    table = RichTable(title=f"{failure.detail}", show_lines=False)
    for column in ("row", "column", "message"):
        table.add_column(column, overflow="fold")
    for e in failure.errors:
        table.add_row("" if e.row is None else str(e.row), e.column or "", e.message)
    console.print(table)


def run_import(kind: str, path: Path) -> int:
    err = Console(stderr=True)
    if kind not in KINDS:
        err.print(f"error: unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
        return 2
    try:
        data = path.read_bytes()
    except OSError as exc:
        err.print(f"error: cannot read {path}: {exc.strerror}")
        return 2
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=False) as progress:
            reading = progress.add_task("reading", total=None)
            try:
                table = parsers.read_table(data, filename=path.name)
            except ImportFailed as exc:
                raise ImportFailed(kind, exc.errors) from exc
            progress.update(reading, total=len(table.rows), completed=len(table.rows))
            task = progress.add_task("checking and writing", total=len(table.rows))
            with transaction(get_engine()) as session:
                result = service.run_import(
                    session,
                    actor=CLI_PRINCIPAL,
                    kind=kind,
                    table=table,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
    except ImportFailed as exc:
        _print_errors(err, exc)
        return 1
    except DomainError as exc:  # e.g. a kind-independent refusal outside any row
        err.print(f"error: {exc.detail}")
        return 1
    except SQLAlchemyError as exc:
        err.print(f"error: database: {_first_line(exc)} (is the schema migrated? `crisis-supply db upgrade`)")
        return 1
    print(f"imported {result.rows} rows from {path.name}: {result.created} {kind} created")
    return 0


def run_export(kind: str, fmt: str, output: Path | None) -> int:
    from app.imports import exports

    err = Console(stderr=True)
    report = kind.removeprefix("reports/") if kind.startswith("reports/") else None
    if (report is None and kind not in exports.DATA_KINDS) or (report is not None and report not in exports.REPORTS):
        choices = [*exports.DATA_KINDS, *(f"reports/{r}" for r in exports.REPORTS)]
        err.print(f"error: unknown kind {kind!r}; choose one of: {', '.join(choices)}")
        return 2
    if fmt not in ("csv", "xlsx"):
        err.print("error: --format must be csv or xlsx")
        return 2
    try:
        with transaction(get_engine()) as session:
            if report is not None:
                threshold = get_settings().days_of_supply_threshold
                export = exports.export_report(
                    session, principal=CLI_PRINCIPAL, report=report, threshold_days=threshold
                )
            else:
                export = exports.export_data(session, principal=CLI_PRINCIPAL, kind=kind)
    except DomainError as exc:
        err.print(f"error: {exc.detail}")
        return 1
    except SQLAlchemyError as exc:
        err.print(f"error: database: {_first_line(exc)} (is the schema migrated? `crisis-supply db upgrade`)")
        return 1
    body = tabular.render(fmt, export.columns, export.rows, title=export.name)  # type: ignore[arg-type]
    if output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(body)
        err.print(f"wrote {len(export.rows)} rows to {output}")
    return 0
