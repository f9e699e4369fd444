"""schemathesis fuzzes every route of a served app from the app's own OpenAPI document: no answer may
be a 5xx, and every answer must match the status codes, content types and schemas the document gives.

Fuzzed inputs include valid ones, so the model really runs; the apps are in-process (ASGI), for speed.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

import notebook_deploy as nd

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("which", ["forest", "pipeline", "wav"])
def test_no_route_answers_5xx_or_off_its_documented_schema(which, request):
    bundle = request.getfixturevalue(f"{which}_bundle")
    schema = schemathesis.openapi.from_asgi("/openapi.json", nd.create_app(bundle))
    failures, tested = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            fuzz()
        except Exception as error:  # noqa: BLE001 - collected, so that one run reports every route
            failures.append(f"{operation.label}: {error}")
    assert "POST /predict" in tested and "POST /invocations" in tested
    assert not failures, "\n\n".join(failures)
