"""Schemathesis against the app's own OpenAPI schema, over real HTTP: no 5xx, and every
answer matches the schema. Bounded examples per operation, so it stays a few seconds."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_the_api_never_errors_and_matches_its_schema(api_base: str, admin_key: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_base}/openapi.json")
    headers = {"authorization": f"Bearer {admin_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6

    for operation in operations:

        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def exercise(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        exercise()
