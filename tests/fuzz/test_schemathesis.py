"""Schemathesis against the app's own OpenAPI document (docs/fuzzing.md)."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck

from tests.fuzz.conftest import REQUEST_VALIDATION_MARKER, FuzzWorld

SEED = 20261122
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))  # ≥ 100 in CI (docs/fuzzing.md)
IDEMPOTENCY_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")
_KEY_COUNTER = itertools.count()
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

    @schema.hook
    def filter_case(context: Any, case: Any) -> bool:
        # The run never revokes its own keys or walks its own organisations out of the coalition: every
        # later request would be a 401 and test nothing.
        params = case.path_parameters or {}
        if case.operation.path == "/v1/api-keys/{key_id}/revoke":
            return params.get("key_id") not in fuzz_world.key_ids
        if case.operation.path == "/v1/organizations/{organization_id}/leave":
            return params.get("organization_id") not in fuzz_world.organization_ids
        return True

    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Real clients send a fresh Idempotency-Key per logical request; generated keys repeat ("0", "00", …),
    and a repeat with a different request is a 422 by design (tests/test_idempotency.py covers replays)."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        headers["Idempotency-Key"] = f"{key[:200]}.{next(_KEY_COUNTER)}"


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
