"""Every API endpoint by every role (and anonymous), over real HTTP, against the issue's rules.

The table below is the specification: admin may do everything; analyst everything but
enroll secrets, tokens and people; auditor reads and reports only. The endpoints are
enumerated from the app itself, so an endpoint added without a row here fails the test.
Denials are 401 for anonymous callers and 403 for a role that may not; anything else
(200, 201, 202, 204, even 400 or 404 for the made-up targets of destructive calls) means
the request got past authorization.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from tests.collector.web.conftest import FAILING_CHECK, PASSWORD, ApiServer

EVERYONE = frozenset({"anonymous", "auditor", "analyst", "admin"})
READERS = frozenset({"auditor", "analyst", "admin"})
STAFF = frozenset({"analyst", "admin"})
ADMIN = frozenset({"admin"})
SIGNED_IN = READERS

#: (method, path) -> (roles allowed, JSON body to send)
MATRIX: dict[tuple[str, str], tuple[frozenset[str], Any]] = {
    ("GET", "/api/v1/health"): (EVERYONE, None),
    ("GET", "/api/v1/session"): (SIGNED_IN, None),
    ("POST", "/api/v1/session"): (EVERYONE, {"name": "dave", "password": PASSWORD}),
    ("DELETE", "/api/v1/session"): (SIGNED_IN, None),
    ("GET", "/api/v1/fleet"): (READERS, None),
    ("GET", "/api/v1/fleet/trend"): (READERS, None),
    ("GET", "/api/v1/groups"): (READERS, None),
    ("GET", "/api/v1/group-rules"): (READERS, None),
    ("POST", "/api/v1/group-rules"): (STAFF, {"group": "Matrix", "hostname_glob": "zz-*"}),
    ("DELETE", "/api/v1/group-rules/{rule_id}"): (STAFF, None),
    ("GET", "/api/v1/hosts"): (READERS, None),
    ("GET", "/api/v1/hosts/{host_id}"): (READERS, None),
    ("GET", "/api/v1/hosts/{host_id}/facts"): (READERS, None),
    ("GET", "/api/v1/hosts/{host_id}/drift"): (READERS, None),
    ("GET", "/api/v1/hosts/{host_id}/changes"): (READERS, None),
    ("GET", "/api/v1/hosts/{host_id}/baseline"): (READERS, None),
    ("POST", "/api/v1/hosts/{host_id}/baseline"): (STAFF, None),
    ("POST", "/api/v1/hosts/{host_id}/collect"): (STAFF, None),
    ("POST", "/api/v1/hosts/{host_id}/credential/revoke"): (STAFF, None),
    ("GET", "/api/v1/checks"): (READERS, None),
    ("GET", "/api/v1/checks/{check_id}"): (READERS, None),
    ("GET", "/api/v1/checks/{check_id}/failing-hosts"): (READERS, None),
    ("GET", "/api/v1/drift"): (READERS, None),
    ("GET", "/api/v1/waivers"): (READERS, None),
    ("GET", "/api/v1/waivers/{waiver_id}"): (READERS, None),
    ("POST", "/api/v1/waivers"): (
        STAFF,
        {
            "check_id": FAILING_CHECK,
            "scope": "fleet",
            "justification": "matrix",
            "expires_at": "2999-01-01T00:00:00Z",
        },
    ),
    ("POST", "/api/v1/waivers/{waiver_id}/approve"): (STAFF, None),
    ("POST", "/api/v1/waivers/{waiver_id}/revoke"): (STAFF, {"reason": "matrix"}),
    ("POST", "/api/v1/reports"): (READERS, {"format": "json"}),
    ("POST", "/api/v1/reports/verify"): (READERS, None),
    ("GET", "/api/v1/enroll-secrets"): (ADMIN, None),
    ("POST", "/api/v1/enroll-secrets"): (ADMIN, {"name": "matrix"}),
    ("POST", "/api/v1/enroll-secrets/{name}/revoke"): (ADMIN, None),
    ("GET", "/api/v1/tokens"): (ADMIN, None),
    ("POST", "/api/v1/tokens"): (ADMIN, {"name": "matrix", "role": "auditor"}),
    ("POST", "/api/v1/tokens/{name}/revoke"): (ADMIN, None),
    ("GET", "/api/v1/users"): (ADMIN, None),
    ("POST", "/api/v1/users"): (
        ADMIN,
        {"name": "matrix", "role": "auditor", "password": "matrix password 1"},
    ),
    ("PUT", "/api/v1/users/{name}/role"): (ADMIN, {"role": "auditor"}),
    ("POST", "/api/v1/users/{name}/disable"): (ADMIN, None),
    ("GET", "/api/v1/audit"): (READERS, None),
}

#: Path parameters: real targets for reads, made-up ones where a call would destroy the
#: fixtures' own tokens, hosts or people.
PARAMS = {
    "host_id": "1",
    "check_id": FAILING_CHECK,
    "waiver_id": "999999",
    "rule_id": "999999",
    "name": "nobody",
}
DESTRUCTIVE = {("POST", "/api/v1/hosts/{host_id}/credential/revoke"): {"host_id": "999999"}}


def _api_routes(api: ApiServer) -> set[tuple[str, str]]:
    """Every (method, path) the app serves under /api/, included routers flattened."""
    routes = set()
    for context in iter_route_contexts(api.server.config.app.routes):
        route, path = context.original_route, context.path
        if isinstance(route, APIRoute) and path and path.startswith("/api/"):
            routes |= {(method, path) for method in route.methods if method != "HEAD"}
    return routes


def test_every_api_endpoint_has_a_row_in_the_matrix(api: ApiServer) -> None:
    routes = _api_routes(api)
    assert routes - MATRIX.keys() == set(), "endpoints without a matrix row"
    assert MATRIX.keys() - routes == set(), "matrix rows without an endpoint"


def _request(api: ApiServer, role: str, method: str, path: str, body: Any) -> int:
    params = {**PARAMS, **DESTRUCTIVE.get((method, path), {})}
    url = path.format(**{k: v for k, v in params.items() if "{" + k + "}" in path})
    with api.client(None if role == "anonymous" else role) as client:
        if path.endswith("/verify"):
            answer = client.post(url, content=b"not a report")
        else:
            answer = client.request(method, url, json=body)
    assert answer.status_code < 500, (role, method, path, answer.text)
    return answer.status_code


@pytest.mark.parametrize("role", ["anonymous", "auditor", "analyst", "admin"])
def test_each_role_gets_exactly_what_the_matrix_allows(api: ApiServer, role: str) -> None:
    wrong = []
    for (method, path), (allowed, body) in sorted(MATRIX.items()):
        status = _request(api, role, method, path, body)
        if role in allowed:
            ok = status not in (401, 403)
        else:
            ok = status == (401 if role == "anonymous" else 403)
        if not ok:
            wrong.append(f"{role} {method} {path}: {status}")
    assert wrong == []
    if role != "anonymous":
        denied = [e for e in api.service.audit.entries() if e.outcome == "denied"]
        expected = sum(role not in allowed for allowed, _ in MATRIX.values())
        permission_denials = [e for e in denied if e.action.startswith("permission.")]
        assert len(permission_denials) == expected, "every refusal is in the audit log"
