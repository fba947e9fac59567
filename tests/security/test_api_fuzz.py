"""The API fuzzed with schemathesis, as each persona, in process (Django's WSGI handler, no HTTP).

For every operation of our OpenAPI schema, valid and invalid requests are generated from the
schema (bodies, query strings, path parameters, headers) and sent as each persona. Every answer
must be below 500, documented in the schema (status, content type, body), and every error is the
one JSON body `{"detail": ..., "errors": {...}}`. A stateful run follows the links schemathesis
infers between operations (a created transaction's id into its fund/cancel/dispute calls, ...).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.security.conftest import PERSONAS, World

pytestmark = pytest.mark.django_db

# Requests per persona the run must reach (7 personas: over 5,000 in all); the examples per
# operation and mode are set so that operations with few distinct inputs still add up to it.
MIN_REQUESTS_PER_PERSONA = 750
EXAMPLES_PER_OPERATION_AND_MODE = 11
STATEFUL_SEQUENCES = 40


def load_schema(world: World) -> Any:
    """Our schema as the API serves it to staff at /api/v1/schema/, with the app to call in process."""
    return schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application, headers=world.headers("staff"))


def error_body_is_the_api_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is JSON `{"detail": str, "errors": {...}}`, never an HTML page."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from exc
    assert isinstance(body, dict), body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("errors"), dict), body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_body_is_the_api_error,
]


def fuzz_operation(operation: Any, world: World, persona: str, sent: Counter[str]) -> None:
    modes = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    strategy = modes.flatmap(lambda mode: operation.as_strategy(generation_mode=mode))

    @given(case=strategy)
    @settings(
        max_examples=2 * EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        sent[operation.label] += 1
        case.call_and_validate(headers=world.headers(persona), checks=CHECKS)

    run()


# Staff requests run jobs inline and publish to the test broker: exercised on purpose. Throttles
# are raised so the fuzzer reaches the endpoints, not only 429 (test_limits.py checks them).
@pytest.mark.parametrize("persona", PERSONAS)
def test_no_request_as_any_persona_gets_a_server_error_or_an_undocumented_answer(
    persona: str, world: World, raised_throttles: None, wsgi_in_test_transaction: None, quiet_4xx_log: None
) -> None:
    # Given every operation of the schema and a persona
    schema = load_schema(world)
    sent: Counter[str] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    # When generated valid and invalid requests are sent as that persona
    for operation in operations:
        fuzz_operation(operation, world, persona, sent)
    print(f"{persona}: {sum(sent.values())} requests over {len(sent)} operations")
    # Then every answer passed the checks (a failure raises above), and the run was big enough
    assert set(sent) == {op.label for op in operations}
    assert sum(sent.values()) >= MIN_REQUESTS_PER_PERSONA, sent.most_common()


@pytest.mark.parametrize("persona", ["buyer", "seller", "driver", "eic", "staff"])
def test_stateful_sequences_following_the_links_get_no_server_error_or_undocumented_answer(
    persona: str, world: World, raised_throttles: None, wsgi_in_test_transaction: None, quiet_4xx_log: None
) -> None:
    # Given the state machine schemathesis builds from the links it infers between operations
    # (a created transaction's id into fund/cancel/dispute, a cart item's product into PATCH/DELETE)
    schema = load_schema(world)
    machine = schema.as_state_machine()
    assert machine.bundles, "no links between operations were inferred"
    steps: list[str] = []

    class AsPersona(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": world.headers(persona)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            steps.append(case.operation.label)
            case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))

    # When sequences of linked calls run as the persona
    AsPersona.run(
        settings=settings(
            max_examples=STATEFUL_SEQUENCES,
            stateful_step_count=6,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    # Then every step passed the checks, and sequences went past their first call
    print(f"stateful {persona}: {len(steps)} steps over {len(set(steps))} operations")
    assert len(steps) > STATEFUL_SEQUENCES
