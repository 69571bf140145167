"""`crisis-supply db backup FILE` / `db restore FILE` for both database backends.

* PostgreSQL: `pg_dump --format=custom` and `pg_restore --clean --if-exists --single-transaction`
  (all or nothing) with the client tools on PATH; their major version should be at least the
  server's. The password goes to them in PGPASSWORD, never on a command line others can read.
* SQLite: the online backup API (`sqlite3.Connection.backup`), consistent while the API is running.
  The backup is a plain SQLite database file (rollback-journal mode, one file); restore copies it
  back into the configured database file page by page.

Both write the backup to `FILE.partial` first and rename it, so FILE is never half written. A restore
replaces every table the backup contains: stop the API and the workers first.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import URL, make_url

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"


class BackupError(Exception):
    """A backup or restore that did not happen; the message says why (no credentials in it)."""


def describe(url: str) -> str:
    """The database named for humans, password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def backup(url: str, destination: Path) -> None:
    parsed = make_url(url)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    try:
        if parsed.get_backend_name() == "sqlite":
            _sqlite_backup(_sqlite_path(parsed), partial)
        elif parsed.get_backend_name() == "postgresql":
            _run(["pg_dump", "--format=custom", "--no-password", f"--file={partial}", _libpq_uri(parsed)], parsed)
        else:
            raise BackupError(f"backups of {parsed.get_backend_name()} databases are not supported")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def restore(url: str, source: Path) -> None:
    parsed = make_url(url)
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"{source}: no such file")
    with source.open("rb") as fh:
        magic = fh.read(len(SQLITE_MAGIC))
    if parsed.get_backend_name() == "sqlite":
        if not magic.startswith(SQLITE_MAGIC):
            raise BackupError(f"{source} is not a SQLite backup (was it made from PostgreSQL?)")
        _sqlite_restore(source, _sqlite_path(parsed))
    elif parsed.get_backend_name() == "postgresql":
        if not magic.startswith(PG_CUSTOM_MAGIC):
            raise BackupError(f"{source} is not a pg_dump custom-format backup (was it made from SQLite?)")
        _run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                "--no-password",
                f"--dbname={_libpq_uri(parsed)}",
                str(source),
            ],
            parsed,
        )
    else:
        raise BackupError(f"restores into {parsed.get_backend_name()} databases are not supported")


# ------------------------------------------------------------------------------------ SQLite


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(url.database)


def _sqlite_backup(database: Path, destination: Path) -> None:
    if not database.is_file():
        raise BackupError(f"{database}: no such database file")
    destination.unlink(missing_ok=True)
    with closing(sqlite3.connect(database, timeout=30)) as src, closing(sqlite3.connect(destination)) as dst:
        src.backup(dst)
        # The live database uses WAL; the backup should be one self-contained file.
        dst.execute("PRAGMA journal_mode=DELETE")
        check = dst.execute("PRAGMA integrity_check").fetchone()
        if check is None or check[0] != "ok":
            raise BackupError(f"the backup failed its integrity check: {check}")


def _sqlite_restore(source: Path, database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)) as src:
        tables = {row[0] for row in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            raise BackupError(f"{source} is a SQLite database but not a crisis-supply backup (no alembic_version)")
        with closing(sqlite3.connect(database, timeout=30)) as dst:
            src.backup(dst)


# ------------------------------------------------------------------------------------ PostgreSQL


def _libpq_uri(url: URL) -> str:
    """The URL as libpq understands it (no SQLAlchemy driver suffix), without the password."""
    bare = URL.create("postgresql", url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string(hide_password=False)


def _run(command: list[str], url: URL) -> None:
    tool = command[0]
    if shutil.which(tool) is None:
        raise BackupError(f"{tool} not found: install the PostgreSQL client tools (Debian: postgresql-client)")
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        if url.password:
            message = message.replace(str(url.password), "***")
        raise BackupError(f"{tool} failed (exit {result.returncode}): {message}")
