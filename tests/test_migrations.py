"""The schema comes only from Alembic: upgrade, downgrade, upgrade again; models == migrated schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.db import make_engine
from app.migrate import downgrade, head_revision, upgrade
from tests.conftest import _create_pg_database, _drop_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('mig') / 'empty.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    url = _create_pg_database(base)
    try:
        yield url
    finally:
        _drop_pg_database(base, url)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, SQLModel.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    expected = {t.name for t in SQLModel.metadata.sorted_tables}
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == expected
    downgrade(empty_db_url, "base")
    assert _tables(empty_db_url) == set()
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == expected
    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
    engine.dispose()


def test_models_match_migrated_schema(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    assert _diff(empty_db_url) == []


def test_check_constraints_are_in_the_database(empty_db_url: str) -> None:
    """Invariants live in the schema, not only in Python."""
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        names = {c["name"] for c in inspect(engine).get_check_constraints("inventory_lots")}
    finally:
        engine.dispose()
    assert {"ck_inventory_lots_on_hand_nonnegative", "ck_inventory_lots_reserved_within_on_hand"} <= names
