"""Backup and restore (issue 5 item 8): the demo coalition, backed up and restored into an EMPTY
database of the same backend, is identical table by table and row by row, and works afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from app.db import make_engine
from app.demo import loader
from app.main import create_app
from app.migrate import is_at_head
from app.operations import backup
from tests.ops_support import empty_database, table_contents


def _load_demo(engine: Engine, tmp_path: Path) -> dict[str, dict[str, object]]:
    loader.load_if_empty(engine=engine)
    return loader.ensure_demo_keys(tmp_path / "keys", engine=engine)


def test_backup_then_restore_into_an_empty_database_gives_identical_tables(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    keys = _load_demo(engine, tmp_path)
    original = table_contents(engine)
    assert sum(len(rows) for rows in original.values()) > 200  # a real coalition, not empty tables
    assert all(original[t] for t in ("organizations", "sites", "items", "inventory_lots", "requests", "api_keys"))

    dump = tmp_path / "coalition.backup"
    backup.backup(engine.url.render_as_string(hide_password=False), dump)
    assert dump.stat().st_size > 0
    assert not dump.with_name(dump.name + ".partial").exists()

    with empty_database(engine.dialect.name, tmp_path, request, "restored") as target_url:
        backup.restore(target_url, dump)
        target = make_engine(target_url)
        try:
            assert table_contents(target) == original
            assert is_at_head(target)
            # The restored database is usable: its keys authenticate, and new rows get fresh ids
            # (PostgreSQL sequences were restored with the data).
            with target.connect() as conn:
                last_id = conn.execute(text("SELECT MAX(id) FROM organizations")).scalar_one()
            client = TestClient(create_app(engine=target), raise_server_exceptions=False)
            admin = {"Authorization": f"Bearer {keys['admin']['key']}"}
            assert client.get("/v1/organizations", headers=admin).status_code == 200
            created = client.post(
                "/v1/organizations", headers=admin, json={"name": "After restore", "kind": "clinic", "region": "north"}
            )
            assert created.status_code == 201, created.text
            assert created.json()["id"] > last_id

            # Restoring again replaces whatever the database holds now: that new organisation, and
            # rows someone deleted or changed, are back to the backup exactly.
            with target.begin() as conn:
                conn.execute(text("DELETE FROM usage_reports"))
                conn.execute(text("UPDATE items SET name = 'renamed'"))
            backup.restore(target_url, dump)
            assert table_contents(target) == original
        finally:
            target.dispose()


def test_a_backup_of_the_other_backend_or_a_random_file_is_refused(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _load_demo(engine, tmp_path)
    before = table_contents(engine)
    url = engine.url.render_as_string(hide_password=False)
    junk = tmp_path / "notes.txt"
    junk.write_text("not a backup\n")
    with pytest.raises(backup.BackupError, match="not a"):
        backup.restore(url, junk)
    with pytest.raises(backup.BackupError, match="no such file"):
        backup.restore(url, tmp_path / "missing.backup")
    if engine.dialect.name == "postgresql":
        # A SQLite backup offered to PostgreSQL is named as such, not fed to pg_restore.
        sqlite_db = tmp_path / "other" / "crisis-supply.db"
        with empty_database("sqlite", tmp_path, request, "other") as sqlite_url:
            from app.migrate import upgrade

            upgrade(sqlite_url)
            backup.backup(sqlite_url, tmp_path / "sqlite.backup")
            assert sqlite_db.exists()
        with pytest.raises(backup.BackupError, match="not a pg_dump"):
            backup.restore(url, tmp_path / "sqlite.backup")
    assert table_contents(engine) == before


def test_a_failed_backup_leaves_no_file_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="no such database file"):
        backup.backup(f"sqlite:///{tmp_path / 'absent.db'}", tmp_path / "out.backup")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(backup.BackupError, match="in-memory"):
        backup.backup("sqlite://", tmp_path / "out.backup")


def test_pg_tools_get_the_password_from_the_environment_not_the_command_line() -> None:
    from sqlalchemy.engine import make_url

    uri = backup._libpq_uri(make_url("postgresql+psycopg://crisis:s3cret@db:5432/crisis?sslmode=require"))
    assert uri == "postgresql://crisis@db:5432/crisis?sslmode=require"
    assert "s3cret" not in backup.describe("postgresql://crisis:s3cret@db:5432/crisis")
