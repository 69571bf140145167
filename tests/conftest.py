"""Test tiers (SPEC §4): SQLite always; PostgreSQL when TEST_DATABASE_URL is set (required when
REQUIRE_POSTGRES=1). The schema comes from Alembic migrations; tables are emptied between tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.db import make_engine, transaction
from app.main import create_app
from app.migrate import upgrade

# Many tests send deliberately unauthenticated requests from one address; the per-address failed-auth
# limit is tested on its own (tests/test_limits.py) with explicit settings.
os.environ.setdefault("CRISIS_AUTH_FAILURES_PER_MINUTE", "0")

PG_URL = os.environ.get("TEST_DATABASE_URL")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgres"]


def _create_pg_database(base_url: str) -> str:
    """A fresh database per test session so parallel runs never share state."""
    url = make_url(base_url)
    name = f"crisis_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(
        url.set(database="postgres").render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(base_url: str, db_url: str) -> None:
    name = make_url(db_url).database
    admin = make_engine(
        make_url(base_url).set(database="postgres").render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    if not PG_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tier: set TEST_DATABASE_URL to run")
    return PG_URL


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    url = _create_pg_database(base)
    try:
        yield url
    finally:
        _drop_pg_database(base, url)


@pytest.fixture(scope="session")
def migrated_engine(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _empty_tables(engine: Engine) -> None:
    # Seeded by a migration, so reset rather than emptied.
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables) if t.name != "change_counters"]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))
        conn.execute(text("UPDATE change_counters SET value = 0"))


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    _empty_tables(migrated_engine)
    yield migrated_engine


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine=engine), raise_server_exceptions=False) as c:
        yield c


@dataclass
class Actor:
    """A principal for tests: its key's headers and organisation."""

    role: str
    key: str
    key_id: int
    organization_id: int | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def factory(engine: Engine) -> Any:
    from tests.factories import Factory

    return Factory(engine)


ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def demo(engine: Engine, tmp_path: Path) -> dict[str, Actor]:
    """The demo coalition loaded into the test database, with one Actor per demo key."""
    from app.demo import loader
    from app.keys import service as keys

    loader.load_if_empty(engine=engine)
    actors: dict[str, Actor] = {}
    with transaction(engine) as session:
        for role, info in loader.ensure_demo_keys(tmp_path, engine=engine).items():
            key = keys.authenticate(session, info["key"])
            assert key is not None
            actors[role] = Actor(role=key.role, key=info["key"], key_id=key.id, organization_id=key.organization_id)
    return actors


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table: bad input must change none of them."""
    with engine.connect() as conn:
        return {
            t.name: conn.execute(text(f'SELECT COUNT(*) FROM "{t.name}"')).scalar_one()
            for t in SQLModel.metadata.sorted_tables
        }
