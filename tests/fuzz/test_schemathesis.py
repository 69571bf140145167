"""Schemathesis against the app's own OpenAPI document, in-process (docs/fuzzing.md).

- `test_every_operation`: every operation in the document, with its examples, the coverage phase (boundary
  and missing/invalid values for every parameter, undeclared methods) and `MAX_EXAMPLES` generated cases,
  positive and negative, all checks on every answer.
- `test_stateful_sequences`: random sequences that follow the document's links (create → read → act on the
  created object with its id and ETag), all checks on every step.
- `test_the_document_states_every_answer`: the shape app/openapi.py promises.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st

from tests.fuzz.conftest import REQUEST_VALIDATION_MARKER, FuzzWorld

SEED = 20261122
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))  # CI runs the default: ≥ 100 per operation
STATEFUL_SEQUENCES = int(os.environ.get("FUZZ_STATEFUL_SEQUENCES", "100"))
STATEFUL_STEPS = 10
MAX_STATEFUL_SUITES = 50
IDEMPOTENCY_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")
_fresh = itertools.count()

# A schema-valid request may still be refused by a rule the document cannot state (docs/fuzzing.md): a
# referenced id that does not exist or is not the caller's (422), a state that forbids the action (409), an
# ETag that is not the current one (412). A 422 from request validation itself is never accepted: see
# `schema_valid_requests_pass_request_validation`. FHIR answers such problems with a 400 OperationOutcome.
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429"]
FHIR_POSITIVE_ACCEPTED = [*POSITIVE_ACCEPTED, "400"]


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_ACCEPTED}},
            "operations": [
                {
                    "include-path-regex": "^/fhir/",
                    "checks": {"positive_data_acceptance": {"expected-statuses": FHIR_POSITIVE_ACCEPTED}},
                }
            ],
            # A run's progress stream (SSE) ends only when the run does: read its first events, then hang up.
            "max-stream-events": 2,
        }
    )


@pytest.fixture(scope="session")
def fuzz_schema(fuzz_world: FuzzWorld) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_world.app, config=_config())

    @schema.auth.auth(refresh_interval=None)
    class RoleAuth:
        """Each operation is called with the key of a role its route allows (conftest.ROLE_PREFERENCE)."""

        def get(self, case: Any, context: Any) -> str | None:
            role = fuzz_world.role_for(case.operation.method, case.operation.path)
            return None if role is None else fuzz_world.keys[role]

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    def known(context: Any, value: Any) -> st.SearchStrategy[Any]:
        """The generated value, where each integer under an id's name may become an id that exists (conftest)."""
        role = fuzz_world.role_for(context.operation.method, context.operation.path)
        return with_known_ids(value, fuzz_world.known_ids.get(role or "", {}))

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
        return known(context, path_parameters)

    @schema.hook
    def flatmap_query(context: Any, query: Any) -> st.SearchStrategy[Any]:
        return known(context, query)

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        return known(context, body)

    @schema.hook
    def filter_case(context: Any, case: Any) -> bool:
        # The run never revokes its own keys or walks their organisations out of the coalition: every later
        # request would be a 401 or a 422 and test nothing.
        params = case.path_parameters or {}
        if case.operation.path == "/v1/api-keys/{key_id}/revoke":
            return params.get("key_id") not in fuzz_world.key_ids
        if case.operation.path == "/v1/organizations/{organization_id}/leave":
            return params.get("organization_id") not in fuzz_world.organization_ids
        return True

    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


def with_known_ids(value: Any, pools: dict[str, list[int]], name: str = "") -> st.SearchStrategy[Any]:
    """Half of the time, an integer named like an id (`site_id`, `lines[0].item_id`) is swapped for an id that
    exists. An integer stays an integer, so a negative case stays negative and a positive one positive."""
    if isinstance(value, dict):
        return st.fixed_dictionaries({k: with_known_ids(v, pools, k) for k, v in value.items()})
    if isinstance(value, list):
        return st.tuples(*(with_known_ids(v, pools, name) for v in value)).map(list)
    pool = pools.get(name)
    if pool and isinstance(value, int) and not isinstance(value, bool):
        return st.one_of(st.just(value), st.sampled_from(pool))
    return st.just(value)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Real clients send a fresh Idempotency-Key per logical request; generated keys repeat ("0", "00", …), and a
    repeat with a different request is a 422 by design (replays are tests/test_idempotency.py's subject)."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        headers["Idempotency-Key"] = f"{key[:200]}.{next(_fresh)}"


@schemathesis.check
def schema_valid_requests_pass_request_validation(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request that FastAPI's own request validation refuses means the document is looser than
    the code (a missing bound, pattern or enum): tighten the code's declaration, which the document is made from."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if REQUEST_VALIDATION_MARKER.lower() in {name.lower() for name in response.headers}:
        raise AssertionError(f"schema-valid request refused by request validation: {response.text[:500]}")
    return None


@schemathesis.check
def reads_with_an_etag_document_304(ctx: Any, response: Any, case: Any) -> bool | None:
    """A GET answered with an ETag can be answered 304 (app.middleware.ConditionalGetMiddleware): the document must
    say so, and app/openapi.py decides that from the response schema, not from the answers."""
    if case.method.upper() == "GET" and response.status_code == 200 and "etag" in {h.lower() for h in response.headers}:
        assert "304" in case.operation.definition.raw["responses"], f"{case.operation.label} sends an ETag, no 304"
    return None


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_operation(case: Any) -> None:
    case.call_and_validate()


def test_stateful_sequences(fuzz_schema: Any) -> None:
    """`STATEFUL_SEQUENCES` sequences of up to `STATEFUL_STEPS` calls along the document's links.

    A sequence's steps depend on the answers, and so on a database that earlier sequences changed: Hypothesis then
    reports the generation as flaky and stops. Like Schemathesis's own runner, start another suite (the next seed)
    until enough sequences have run; a failed check is never swallowed (it is not `Flaky`)."""
    completed = 0

    class Counted(fuzz_schema.as_state_machine()):  # type: ignore[misc]
        def teardown(self) -> None:
            nonlocal completed
            completed += 1
            super().teardown()

    for suite in range(MAX_STATEFUL_SUITES):
        Counted._hypothesis_internal_use_seed = SEED + suite  # what @hypothesis.seed sets; run() passes it on
        settings = hypothesis.settings(
            max_examples=STATEFUL_SEQUENCES - completed,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[hypothesis.Phase.generate],  # no shrinking: a replay would meet a different database
        )
        try:
            Counted.run(settings=settings)
        except hypothesis.errors.Flaky:
            if completed < STATEFUL_SEQUENCES:
                continue
        break
    assert completed >= STATEFUL_SEQUENCES, f"only {completed} sequences ran in {MAX_STATEFUL_SUITES} suites"


def test_the_document_states_every_answer() -> None:
    """What app/openapi.py promises for every operation, read from the document itself."""
    from sqlalchemy import create_engine

    from app.main import create_app

    document = create_app(engine=create_engine("sqlite://")).openapi()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (SPEC §2): `Authorization: Bearer <key>`",
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not path.startswith(("/v1/", "/fhir/R4/")) or path == "/fhir/R4/metadata":
                continue
            checked += 1
            codes = set(operation["responses"])
            params = {p["name"]: p for p in operation.get("parameters", [])}
            label = f"{method.upper()} {path}"
            assert operation["security"] == [{"bearerAuth": []}], label
            assert {"401", "403", "422", "429"} <= codes, label
            assert not any(code.startswith("5") for code in codes), label
            assert ("404" in codes) == ("{" in path), label
            assert ("409" in codes) == (method != "get"), label
            assert ("413" in codes) == ("requestBody" in operation), label
            if "If-Match" in params:
                assert "412" in codes and ("428" in codes) == params["If-Match"]["required"], label
            if method == "post" and path.startswith("/v1/") and path != "/v1/api-keys":
                assert "Idempotency-Key" in params, label
            for code in codes - {"200", "201", "202", "304"}:
                content = operation["responses"][code]["content"]
                assert set(content) <= {"application/problem+json", "application/fhir+json"}, (label, code)
            assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True, label
    assert checked >= 80
    creates = document["paths"]["/v1/requests"]["post"]["responses"]["201"]
    update = creates["links"]["update_request_v1_requests__request_id__patch"]["parameters"]
    assert update == {"path.request_id": "$response.body#/id", "header.If-Match": "$response.header.ETag"}
    assert "304" in document["paths"]["/v1/requests/{request_id}"]["get"]["responses"]
