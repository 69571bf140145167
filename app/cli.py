"""Command line: crisis-supply serve | db upgrade | demo load | keys create | …"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.config import get_settings

app = typer.Typer(help="crisis-supply: coalition supply records and allocation.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and backups.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo coalition.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(keys_app, name="keys")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply Alembic migrations (the only way the schema is created)."""
    from app.migrate import upgrade

    upgrade(get_settings().effective_database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "base") -> None:
    """Revert migrations (to `base` by default: drops every table)."""
    from app.migrate import downgrade

    downgrade(get_settings().effective_database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="Backup file to write (PostgreSQL: pg_dump custom format)")],
) -> None:
    """Back up the database while it is in use (PostgreSQL: pg_dump; SQLite: the online backup API)."""
    from app.operations import backup

    url = get_settings().effective_database_url
    try:
        backup.backup(url, file)
    except backup.BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"backed up {backup.describe(url)} to {file}")


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="A file written by `crisis-supply db backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Replace the database's content with a backup (stop the API and workers first)."""
    from app.operations import backup

    url = get_settings().effective_database_url
    if not yes:
        typer.confirm(f"Replace every table of {backup.describe(url)} with {file}?", abort=True)
    try:
        backup.restore(url, file)
    except backup.BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"restored {backup.describe(url)} from {file}")


@demo_app.command("load")
def demo_load(force: bool = typer.Option(False, help="Load even if the database already has organisations")) -> None:
    """Create the demo coalition (idempotent unless --force)."""
    from app.demo import loader
    from app.migrate import upgrade

    upgrade(get_settings().effective_database_url)
    loaded = loader.load_if_empty(force=force)
    typer.echo("demo coalition loaded" if loaded else "database not empty; demo not loaded")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin | logistics | requester | donor | driver")],
    org: Annotated[int | None, typer.Option(help="Organisation id (requester, donor, driver)")] = None,
    name: Annotated[str | None, typer.Option(help="A name to recognise the key by")] = None,
) -> None:
    """Create an API key; the key is printed alone on the last line."""
    from pydantic import ValidationError

    from app.db import get_engine, transaction
    from app.errors import DomainError
    from app.keys import service
    from app.keys.models import ApiKeyCreate
    from app.principal import SYSTEM

    try:
        data = ApiKeyCreate(name=name or f"{role} key", role=role, organization_id=org)  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from exc
    try:
        with transaction(get_engine()) as session:
            key, secret = service.create_key(session, actor=SYSTEM, data=data)
            typer.echo(f"created {key.role} key #{key.id} ({key.name})")
    except DomainError as exc:
        option = {"organization_id": "--org", "role": "--role", "name": "--name"}.get(exc.field or "", exc.field or "")
        typer.echo(f"error: {option}: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(secret)


@app.command("serve")
def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: int = 1,
    demo: bool = typer.Option(False, help="Migrate, load the demo coalition on first start and print demo keys"),
) -> None:
    """Serve the API and dashboard with uvicorn."""
    import uvicorn

    from app.migrate import upgrade

    if demo:
        from app.demo import loader

        upgrade(get_settings().effective_database_url)
        loader.load_if_empty()
        keys = loader.ensure_demo_keys()
        typer.echo("demo API keys (Authorization: Bearer <key>):")
        for role, info in keys.items():
            typer.echo(f"  {role:<12} {info['key']}   ({info['name']})")
        typer.echo(f"Dashboard: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    from app.operations.logging import configure_logging
    from app.operations.metrics import prepare_multiprocess_dir

    configure_logging(get_settings().log_level)
    prepare_multiprocess_dir()
    # log_config=None: uvicorn's messages go through our JSON logging; the app logs one line per request.
    uvicorn.run(
        "app.asgi:app", host=host, port=port, workers=workers, log_level="info", log_config=None, access_log=False
    )


@app.command("worker")
def worker(
    once: bool = typer.Option(False, "--once", help="Process the queued runs, then exit"),
    poll_interval: Annotated[float, typer.Option(envvar="CRISIS_WORKER_POLL_S", min=0.05)] = 1.0,
    heartbeat_interval: Annotated[float, typer.Option(envvar="CRISIS_WORKER_HEARTBEAT_S", min=0.05)] = 2.0,
    stale_after: Annotated[
        float, typer.Option(envvar="CRISIS_WORKER_STALE_AFTER_S", min=0.1, help="Re-queue runs silent this long")
    ] = 20.0,
) -> None:
    """Claim and solve queued allocation runs (run any number of these against PostgreSQL)."""
    from app.allocation.worker_main import main as worker_main
    from app.operations.logging import configure_logging

    configure_logging(get_settings().log_level)

    raise typer.Exit(
        worker_main(
            once=once, poll_interval=poll_interval, heartbeat_interval=heartbeat_interval, stale_after_s=stale_after
        )
    )


@app.command("import")
def import_file(
    kind: Annotated[str, typer.Argument(help="organizations | sites | items | inventory | requests | pledges")],
    file: Annotated[Path, typer.Argument(help="A CSV (UTF-8, header row) or XLSX file (first sheet)")],
) -> None:
    """Import a spreadsheet, all-or-nothing; on any error print every bad cell and exit 1."""
    from app.imports.cli import run_import

    raise typer.Exit(run_import(kind, file))


@app.command("export")
def export(
    kind: Annotated[
        str,
        typer.Argument(
            help="organizations | sites | items | inventory | requests | pledges | "
            "shipments | plans | reports/gap | reports/days-of-supply | "
            "reports/request-ageing | reports/donor-impact"
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", help="csv | xlsx")] = "csv",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout)")] = None,
) -> None:
    """Export every row of a kind (or a report) as CSV or XLSX."""
    from app.imports.cli import run_export

    raise typer.Exit(run_export(kind, fmt, output))


@app.command("solve")
def solve(problem: str, output: Annotated[str | None, typer.Option("-o")] = None) -> None:
    """Solve a Problem JSON file (same as `python -m optimizer solve`)."""
    from optimizer.__main__ import main as optimizer_main

    args = ["solve", problem] + (["-o", output] if output else [])
    raise typer.Exit(optimizer_main(args))


if __name__ == "__main__":
    app()
