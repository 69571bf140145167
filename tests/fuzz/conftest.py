"""The fuzz run's world, per backend: a migrated database with the demo coalition, one API key per role, and the app
with rate limits off, loaded by Schemathesis from the app's own OpenAPI document (in-process ASGI).

Fuzzing runs with `make fuzz` (`pytest tests/fuzz`); a plain `pytest` run of the whole suite leaves these
tests out (they take minutes, the rest of the suite seconds). See docs/fuzzing.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings
from app.db import make_engine, transaction
from app.deps import declared_roles, iter_api_routes
from app.main import create_app
from app.migrate import upgrade
from tests.conftest import BACKENDS, _create_pg_database, _drop_pg_database

FUZZ_DIR = Path(__file__).parent
# Sent with every answer of FastAPI's request validation (not of a service rule): a schema-valid request must
# never get one, or the schema is looser than the code (the check in test_schemathesis.py).
REQUEST_VALIDATION_MARKER = "X-Fuzz-Request-Validation"
# Which demo key calls an operation: the first of these its route allows (so every operation runs as a role
# that may use it, and org-bound roles only where no coalition role may).
ROLE_PREFERENCE = ("logistics", "admin", "requester", "donor", "driver")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the fuzz tests out of a whole-suite run unless asked for (`pytest tests/fuzz`, or CRISIS_FUZZ=1)."""
    asked = os.environ.get("CRISIS_FUZZ") == "1" or any(
        Path(arg.split("::")[0]).resolve().is_relative_to(FUZZ_DIR) for arg in config.args
    )
    if asked:
        return
    fuzz = [item for item in items if Path(str(item.path)).resolve().is_relative_to(FUZZ_DIR)]
    if fuzz:
        config.hook.pytest_deselected(items=fuzz)
        items[:] = [item for item in items if item not in fuzz]


@dataclass
class FuzzWorld:
    app: FastAPI
    engine: Engine
    keys: dict[str, str]  # role -> secret
    key_ids: set[int]
    organization_ids: set[int]  # organisations the fuzz keys belong to
    known_ids: dict[str, dict[str, list[int]]]  # role -> id name (`site_id`, …) -> ids that exist (known_ids())
    roles_by_operation: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def role_for(self, method: str, path: str) -> str | None:
        allowed = self.roles_by_operation.get((method.upper(), path))
        if allowed is None:
            return None
        return next(role for role in ROLE_PREFERENCE if role in allowed)


def known_ids(engine: Engine, organizations: dict[str, int | None]) -> dict[str, dict[str, list[int]]]:
    """Ids of the demo coalition's rows by the names parameters and body fields give them, per role: an
    organisation-bound role gets its own organisation's sites and organisation, the others every one. Random
    integers almost never name a row, so without these nearly every case would stop at a 404 or a 422."""
    from sqlmodel import select

    from app.allocation.models import AllocationRun, PlanLine
    from app.inventory.models import InventoryLot, InventoryMovement
    from app.items.models import Item
    from app.keys.models import ApiKey
    from app.organizations.models import Organization
    from app.pledges.models import Pledge
    from app.requests.models import RequestLine, SupplyRequest
    from app.shipments.models import Shipment
    from app.sites.models import Site
    from app.usage.models import UsageReport

    with transaction(engine) as session:

        def ids(stmt: Any) -> list[int]:
            return sorted(session.exec(stmt).all())

        common = {
            "item_id": ids(select(Item.id)),
            "lot_id": ids(select(InventoryLot.id)),
            "movement_id": ids(select(InventoryMovement.id)),
            "request_id": ids(select(SupplyRequest.id)),
            "line_id": ids(select(RequestLine.id)) + ids(select(PlanLine.id)),
            "pledge_id": ids(select(Pledge.id)),
            "report_id": ids(select(UsageReport.id)),
            "run_id": ids(select(AllocationRun.id)),
            "shipment_id": ids(select(Shipment.id)),
            "key_id": ids(select(ApiKey.id)),
            "driver_key_id": ids(select(ApiKey.id).where(ApiKey.role == "driver")),
            "depot_site_id": ids(select(Site.id).where(Site.kind == "depot")),
            "origin_site_id": ids(select(Site.id).where(Site.kind.in_(("depot", "donor_site")))),  # type: ignore[attr-defined]
        }
        every_site, every_org = ids(select(Site.id)), ids(select(Organization.id))
        pools: dict[str, dict[str, list[int]]] = {}
        for role, org in organizations.items():
            own_sites = ids(select(Site.id).where(Site.organization_id == org)) if org is not None else every_site
            pools[role] = {
                **common,
                "site_id": own_sites,
                "destination_site_id": own_sites,
                "organization_id": [org] if org is not None else every_org,
            }
    return pools


def _marked(handler: Any) -> Any:
    async def marked(request: Request, exc: Exception) -> Response:
        response = await handler(request, exc)
        response.headers[REQUEST_VALIDATION_MARKER] = "1"
        return response

    return marked


@contextmanager
def request_validation_marked(app: FastAPI) -> Iterator[None]:
    """Mark the answers of FastAPI's request validation, the app's (422) and FHIR's (400, app.fhir.outcome)."""
    from app.fhir import outcome

    app.exception_handlers[RequestValidationError] = _marked(app.exception_handlers[RequestValidationError])
    original = outcome.HANDLERS[RequestValidationError]
    outcome.HANDLERS[RequestValidationError] = _marked(original)
    try:
        yield
    finally:
        outcome.HANDLERS[RequestValidationError] = original


@pytest.fixture(scope="session", params=BACKENDS)
def fuzz_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of the fuzz run's own, per backend: SQLite, and PostgreSQL when TEST_DATABASE_URL is set (as for
    every test: skipped without it, a failure when REQUIRE_POSTGRES=1)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'fuzz.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    url = _create_pg_database(base)
    try:
        yield url
    finally:
        _drop_pg_database(base, url)


@pytest.fixture(scope="session")
def fuzz_world(fuzz_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzWorld]:
    from app.demo import loader
    from app.keys import service as keys

    db_url = fuzz_db_url
    upgrade(db_url)
    engine = make_engine(db_url)
    loader.load_if_empty(engine=engine)
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    demo_keys = loader.ensure_demo_keys(data_dir, engine=engine)
    secrets = {role: demo_keys[role]["key"] for role in ("admin", "logistics", "requester", "donor", "driver")}
    with transaction(engine) as session:
        found = [keys.authenticate(session, info["key"]) for info in demo_keys.values()]
    organizations = {role: demo_keys[role]["organization_id"] for role in secrets}
    settings = Settings(
        data_dir=data_dir,
        database_url=db_url,
        rate_limit_writes_per_minute=0,
        rate_limit_reads_per_minute=0,
        auth_failures_per_minute=0,
        log_level="WARNING",  # the access log would print every one of the fuzz run's requests
    )
    app = create_app(engine=engine, settings=settings)
    world = FuzzWorld(
        app=app,
        engine=engine,
        keys=secrets,
        key_ids={k.id for k in found if k is not None and k.id is not None},
        organization_ids={k.organization_id for k in found if k is not None and k.organization_id is not None},
        known_ids=known_ids(engine, organizations),
    )
    for route in iter_api_routes(app.routes):
        roles = declared_roles(route)
        if roles is not None:
            for method in route.methods or ():
                world.roles_by_operation[(method, route.path_format)] = roles
    with request_validation_marked(app):
        yield world
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # stops the app's embedded solver worker
    engine.dispose()
