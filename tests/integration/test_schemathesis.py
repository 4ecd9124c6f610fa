"""Schemathesis over ``/schema/openapi.json`` against the live API process and a real worker.

Every operation gets a bounded number of generated requests (valid and invalid), sent with
the test admin key; the run must find no 5xx and no response that breaks the schema.
Generation requests queue real jobs on the tiny model, so each generated body's
``max_tokens`` is clamped to a few tokens before it is sent.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.auth import AUTH
from tests.integration.stack import Stack

pytestmark = pytest.mark.timeout(120)
MAX_TOKENS = 4
EXAMPLES = 15


@pytest.fixture(scope="module")
def api_schema(api_url: str, stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{api_url}/schema/openapi.json", timeout=10)


def _small(body: Any) -> Any:
    """Keep generated jobs short: the tiny model runs each one for real."""
    if isinstance(body, dict):
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(name), int) and body[name] > MAX_TOKENS:
                body[name] = MAX_TOKENS
    return body


def _run(case: schemathesis.Case, api_url: str) -> None:
    case.body = _small(case.body)
    case.call_and_validate(
        base_url=api_url,
        headers=AUTH,
        timeout=30,
        checks=[not_a_server_error, response_schema_conformance],
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms(api_schema: Any, api_url: str, mode: GenerationMode) -> None:
    """Each operation, ``EXAMPLES`` generated requests per mode (schemathesis's Python API:
    its pytest loader does not run under pytest 9)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    tested: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            _run(case, api_url)

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid: no parameters, no body
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        tested.append(operation.label)
    assert len(tested) >= (8 if mode is GenerationMode.POSITIVE else 4), tested
