"""People's sessions over real HTTP: cookie attributes, CSRF, logout and revocation."""

from __future__ import annotations

from contextlib import closing

import httpx

from tests.collector.web.conftest import PASSWORD, ApiServer


def test_login_sets_a_strict_httponly_cookie_and_wrong_passwords_are_refused(
    api: ApiServer,
) -> None:
    with httpx.Client(base_url=api.url) as client:
        wrong = client.post("/api/v1/session", json={"name": "alice", "password": "x" * 12})
        assert wrong.status_code == 401 and "posture_session" not in wrong.cookies
        unknown = client.post("/api/v1/session", json={"name": "zed", "password": PASSWORD})
        assert unknown.status_code == 401
        assert unknown.json()["error"]["message"] == wrong.json()["error"]["message"]
        answer = client.post("/api/v1/session", json={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 201
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=28800" in cookie
    assert answer.json()["principal"]["role"] == "analyst"
    denied = [(e.actor, e.action) for e in api.service.audit.entries() if e.outcome == "denied"]
    assert ("alice", "login") in denied and ("zed", "login") in denied


def test_unsafe_requests_with_the_cookie_need_the_csrf_token(api: ApiServer) -> None:
    client, csrf = api.login("alice")
    host = api.hosts["pd-1"].id
    with closing(client):
        assert client.get("/api/v1/hosts").status_code == 200  # reads need no token
        missing = client.post(f"/api/v1/hosts/{host}/collect")
        assert missing.status_code == 403 and missing.json()["error"]["code"] == "csrf"
        wrong = client.post(f"/api/v1/hosts/{host}/collect", headers={"X-CSRF-Token": "0" * 64})
        assert wrong.status_code == 403
        foreign = client.post(
            f"/api/v1/hosts/{host}/collect",
            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        right = client.post(f"/api/v1/hosts/{host}/collect", headers={"X-CSRF-Token": csrf})
        assert right.status_code == 202, right.text
    actions = [(e.actor, e.action, e.outcome) for e in api.service.audit.entries()]
    assert ("alice", "csrf", "denied") in actions and ("alice", "host.collect", "ok") in actions


def test_logout_and_disabling_a_person_end_their_session_server_side(api: ApiServer) -> None:
    alice, alice_csrf = api.login("alice")
    bob, _ = api.login("bob")
    with closing(alice), closing(bob):
        stolen = alice.cookies["posture_session"]
        assert (
            alice.delete("/api/v1/session", headers={"X-CSRF-Token": alice_csrf}).status_code == 204
        )
        with httpx.Client(base_url=api.url, cookies={"posture_session": stolen}) as replay:
            assert replay.get("/api/v1/hosts").status_code == 401
        assert bob.get("/api/v1/session").status_code == 200
        with api.client("admin") as admin:
            assert admin.post("/api/v1/users/bob/disable").status_code == 200
        assert bob.get("/api/v1/session").status_code == 401


def test_a_role_change_applies_to_open_sessions_at_once(api: ApiServer) -> None:
    client, _ = api.login("bob")
    with closing(client):
        assert client.get("/api/v1/session").json()["principal"]["role"] == "analyst"
        with api.client("admin") as admin:
            changed = admin.put("/api/v1/users/bob/role", json={"role": "auditor"})
            assert changed.status_code == 200, changed.text
        assert client.get("/api/v1/session").json()["principal"]["role"] == "auditor"


def test_a_token_session_ends_when_the_token_is_revoked(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url) as client, api.client("admin") as admin:
        created = admin.post("/api/v1/tokens", json={"name": "kiosk", "role": "auditor"})
        assert created.status_code == 201
        token = created.json()["token"]
        assert token.startswith("pst_") and token not in admin.get("/api/v1/tokens").text
        login = client.post("/api/v1/session", json={"token": token})
        assert login.status_code == 201 and login.json()["principal"]["actor"] == "token:kiosk"
        assert client.get("/api/v1/fleet").status_code == 200
        assert admin.post("/api/v1/tokens/kiosk/revoke").status_code == 200
        assert client.get("/api/v1/fleet").status_code == 401
        bearer = httpx.get(f"{api.url}/api/v1/fleet", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 401
