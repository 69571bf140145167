"""The command line (SPEC §4.2), run as users run it: the installed `crisis-supply` script in a subprocess."""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db import make_engine
from app.main import create_app
from tests.ops_support import cli_env, empty_database, run_cli

# SPEC §4.2, plus the db and keys helpers around them.
COMMANDS = [
    [],
    ["serve"],
    ["worker"],
    ["db"],
    ["db", "upgrade"],
    ["db", "downgrade"],
    ["db", "backup"],
    ["db", "restore"],
    ["demo", "load"],
    ["keys", "create"],
    ["import"],
    ["export"],
    ["solve"],
]


@pytest.fixture(scope="module")
def help_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompletedProcess[str]]:
    env = cli_env(tmp_path_factory.mktemp("help"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda args: run_cli([*args, "--help"], env), COMMANDS)
        return {shlex.join(args): result for args, result in zip(COMMANDS, results, strict=True)}


@pytest.mark.parametrize("command", [shlex.join(c) for c in COMMANDS], ids=lambda c: c or "crisis-supply")
def test_every_command_has_help(command: str, help_pages: dict[str, CompletedProcess[str]]) -> None:
    result = help_pages[command]
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and f"crisis-supply {command}".strip() in result.stdout


def _env(backend: str, tmp_path: Path, url: str) -> dict[str, str]:
    """SQLite: only a data directory, as `make run` uses it; PostgreSQL: DATABASE_URL."""
    if backend == "sqlite":
        return cli_env(Path(url.removeprefix("sqlite:///")).parent)
    return cli_env(tmp_path / "data", url)


def _ok(result: CompletedProcess[str]) -> CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_keys_create_prints_a_working_key_alone_on_the_last_line(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with empty_database(backend, tmp_path, request) as url:
        env = _env(backend, tmp_path, url)
        _ok(run_cli(["db", "upgrade"], env))
        created = _ok(run_cli(["keys", "create", "--role", "logistics", "--name", "night shift"], env))
        key = created.stdout.rstrip("\n").splitlines()[-1]
        assert key.startswith("cs_") and " " not in key  # a script can do KEY=$(… | tail -n 1)

        engine = make_engine(url)
        try:
            client = TestClient(create_app(engine=engine), raise_server_exceptions=False)
            assert client.get("/v1/items", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert client.get("/v1/items", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
            keys = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"})
            assert keys.status_code in (200, 403)  # whoever may list keys, the new one authenticated
        finally:
            engine.dispose()


def test_a_requester_key_without_an_organisation_is_refused_clearly(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with empty_database("sqlite", tmp_path, request) as url:
        env = _env("sqlite", tmp_path, url)
        _ok(run_cli(["db", "upgrade"], env))
        refused = run_cli(["keys", "create", "--role", "requester"], env)
        assert refused.returncode == 2
        assert "--org" in refused.stderr and "requester" in refused.stderr
        assert refused.stdout.strip() == ""  # nothing a script could mistake for a key
        unknown = run_cli(["keys", "create", "--role", "superuser"], env)
        assert unknown.returncode == 2 and "role" in unknown.stderr
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM api_keys")).scalar_one() == 0
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrade_demo_load_backup_and_restore_on_a_fresh_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with empty_database(backend, tmp_path, request) as url:
        env = _env(backend, tmp_path, url)
        _ok(run_cli(["db", "upgrade"], env))
        assert "demo coalition loaded" in _ok(run_cli(["demo", "load"], env)).stdout
        assert "not loaded" in _ok(run_cli(["demo", "load"], env)).stdout  # idempotent
        source_counts = _counts(url)
        assert source_counts["organizations"] > 5 and source_counts["inventory_lots"] > 5

        dump = tmp_path / "backups" / "coalition.dump"
        backed_up = _ok(run_cli(["db", "backup", str(dump)], env))
        assert dump.is_file() and str(dump) in backed_up.stdout

        with empty_database(backend, tmp_path, request, "restored") as target_url:
            target_env = _env(backend, tmp_path / "restored-env", target_url)
            no_confirmation = run_cli(["db", "restore", str(dump)], target_env, input="n\n")
            assert no_confirmation.returncode != 0  # asked, answered no: nothing restored
            _ok(run_cli(["db", "restore", str(dump), "--yes"], target_env))
            assert _counts(target_url) == source_counts


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = ("organizations", "sites", "items", "inventory_lots", "requests", "pledges", "audit_events")
            return {t: conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one() for t in tables}
    finally:
        engine.dispose()
