"""Property-based test of the API against its own OpenAPI document (schemathesis).

A real server over a seeded store; every operation gets generated requests with the admin
token, and every answer must be no server error, have a documented status and content
type, and match its documented schema. Bounded for CI (``POSTURE_API_EXAMPLES``, default
5 per operation); a longer run: ``POSTURE_API_EXAMPLES=500 .venv/bin/pytest
tests/collector/web/test_api_schema.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.collector.web.conftest import ApiServer, start_api, stop_api

EXAMPLES = int(os.environ.get("POSTURE_API_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(tmp_path_factory.mktemp("schema") / "collector.db")
    yield server
    stop_api(server)


def _check(case: schemathesis.Case, token: str) -> int:
    response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
    return response.status_code


def test_the_api_answers_every_generated_request_as_documented(schema_server: ApiServer) -> None:
    """Driven through hypothesis directly: schemathesis' pytest plugin does not load under
    pytest 9 (it reads a private ``_nodeid``)."""
    loaded = schemathesis.openapi.from_url(f"{schema_server.url}/api/v1/openapi.json")
    loaded.config.update(base_url=schema_server.url)
    token = schema_server.tokens["admin"]
    tested, statuses = [], []
    for result in loaded.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            statuses.append(_check(case, token))

        run()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 30, tested
    assert len(statuses) >= len(tested)  # every operation was called
    assert sum(200 <= status < 300 for status in statuses) >= len(tested) // 2
