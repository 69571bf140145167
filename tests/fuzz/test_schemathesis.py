"""Schemathesis against the app's own OpenAPI document (docs/fuzzing.md)."""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck

from tests.fuzz.conftest import REQUEST_VALIDATION_MARKER, FuzzWorld

SEED = 20261122
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))  # ≥ 100 in CI (docs/fuzzing.md)
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429"]


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_ACCEPTED}},
            "max-stream-events": 2,
        }
    )


@pytest.fixture(scope="session")
def fuzz_schema(fuzz_world: FuzzWorld) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_world.app, config=_config())

    @schema.auth.auth(refresh_interval=None)
    class RoleAuth:
        def get(self, case: Any, context: Any) -> str | None:
            role = fuzz_world.role_for(case.operation.method, case.operation.path)
            return None if role is None else fuzz_world.keys[role]

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schemathesis.check
def positive_data_passes_request_validation(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request rejected by FastAPI's own request validation means the schema is looser than
    the code. (A 422 from a service rule — an unknown id, a quantity beyond stock — is the contract.)"""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code == 422 and REQUEST_VALIDATION_MARKER.lower() in {k.lower() for k in response.headers}:
        raise AssertionError(f"schema-valid request failed request validation: {response.text[:500]}")
    return None


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation(case: Any) -> None:
    case.call_and_validate()
