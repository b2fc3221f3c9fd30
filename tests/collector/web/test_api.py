"""The JSON API over real HTTP: what analysts, auditors and scripts read and change."""

from __future__ import annotations

import csv
import hashlib
import io
from contextlib import closing
from datetime import UTC, datetime, timedelta

from collector.collect_requests import registry_for
from tests.collector.web.conftest import FAILING_CHECK, ApiServer


def test_fleet_summary_and_groups_score_the_seeded_hosts(api: ApiServer) -> None:
    with api.client("auditor") as client:
        fleet = client.get("/api/v1/fleet").json()
        groups = {g["name"]: g for g in client.get("/api/v1/groups").json()}
    assert fleet["score"]["hosts"] == 3
    assert fleet["at"].endswith("Z")
    assert fleet["score"]["share_without_severe_failures"] < 1  # two hosts fail a critical
    assert {w["check_id"]: w["failing"] for w in fleet["worst_checks"]}[FAILING_CHECK] == 2
    assert groups["Police"]["score"]["hosts"] == 2 and groups["Parks"]["score"]["hosts"] == 1


def test_hosts_filter_sort_search_and_page(api: ApiServer) -> None:
    with api.client("analyst") as client:

        def names(**params: object) -> list[str]:
            answer = client.get("/api/v1/hosts", params=params)
            assert answer.status_code == 200, answer.text
            return [item["host"]["hostname"] for item in answer.json()["items"]]

        assert names() == ["parks-1", "pd-1", "pd-2"]
        assert names(group="Police") == ["pd-1", "pd-2"]
        assert names(failing_check=FAILING_CHECK) == ["parks-1", "pd-1"]
        assert names(q="pd-") == ["pd-1", "pd-2"]
        assert names(platform="windows") == []
        assert names(stale=True) == []
        assert names(sort="hostname", order="desc") == ["pd-2", "pd-1", "parks-1"]
        best = names(sort="score", order="desc")
        assert best[0] == "pd-2"
        assert names(min_score=100) == ["pd-2"]
        assert names(max_score=50) == ["parks-1", "pd-1"]
        first = client.get("/api/v1/hosts", params={"limit": 2}).json()
        assert (first["total"], first["next_offset"], len(first["items"])) == (3, 2, 2)
        last = client.get("/api/v1/hosts", params={"limit": 2, "offset": 2}).json()
        assert last["next_offset"] is None and len(last["items"]) == 1


def test_host_detail_shows_the_failing_check_with_its_evidence(api: ApiServer) -> None:
    host = api.hosts["pd-1"]
    with api.client("auditor") as client:
        detail = client.get(f"/api/v1/hosts/{host.id}").json()
        facts = client.get(f"/api/v1/hosts/{host.id}/facts", params={"table": "users"}).json()
        timeline = client.get(f"/api/v1/hosts/{host.id}/drift").json()
    result = {r["check_id"]: r for r in detail["results"]}[FAILING_CHECK]
    assert result["status"] == "fail" and result["severity"] == "critical"
    assert {"username": "toor", "uid": "0"}.items() <= result["evidence"][0].items() or any(
        row.get("username") == "toor" for row in result["evidence"]
    )
    assert detail["groups"] == ["Police"]
    assert [t["table"] for t in facts] == ["users"]
    assert any(row["username"] == "toor" for row in facts[0]["rows"])
    assert all(event["host_id"] == host.id for event in timeline["items"])


def test_checks_list_and_failing_hosts(api: ApiServer) -> None:
    with api.client("auditor") as client:
        check = client.get(f"/api/v1/checks/{FAILING_CHECK}").json()
        failing = client.get(f"/api/v1/checks/{FAILING_CHECK}/failing-hosts").json()
        missing = client.get("/api/v1/checks/no.such.check")
    assert check["counts"]["fail"] == 2 and check["counts"]["pass"] == 1
    assert check["check"]["remediation"] and check["check"]["frameworks"]
    assert sorted(i["host"]["hostname"] for i in failing["items"]) == ["parks-1", "pd-1"]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_errors_share_one_body_shape(api: ApiServer) -> None:
    with api.client() as anonymous, api.client("auditor") as auditor:
        unauthenticated = anonymous.get("/api/v1/hosts")
        forbidden = auditor.post("/api/v1/hosts/1/collect")
        missing = auditor.get("/api/v1/hosts/999999")
        invalid = auditor.get("/api/v1/hosts", params={"limit": 0})
        no_route = auditor.get("/api/v1/nothing-here")
    for answer, status in (
        (unauthenticated, 401), (forbidden, 403), (missing, 404), (invalid, 422), (no_route, 404)
    ):  # fmt: skip
        assert answer.status_code == status, answer.text
        assert set(answer.json()) == {"error"}
        assert set(answer.json()["error"]) == {"code", "message"}
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert "limit" in invalid.json()["error"]["message"]


def test_two_people_request_and_approve_a_waiver_and_the_requester_cannot(
    api: ApiServer,
) -> None:
    host = api.hosts["pd-1"]
    alice, alice_csrf = api.login("alice")
    bob, bob_csrf = api.login("bob")
    with closing(alice), closing(bob):
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        body = {"check_id": FAILING_CHECK, "scope": "host", "target": str(host.id),
                "justification": "legacy service account", "ticket": "CHG-1",
                "expires_at": expires}  # fmt: skip
        created = alice.post("/api/v1/waivers", json=body, headers={"X-CSRF-Token": alice_csrf})
        assert created.status_code == 201, created.text
        waiver = created.json()
        assert (waiver["state"], waiver["requested_by"]) == ("requested", "alice")
        own = alice.post(
            f"/api/v1/waivers/{waiver['id']}/approve", headers={"X-CSRF-Token": alice_csrf}
        )
        assert own.status_code == 400 and "another person" in own.json()["error"]["message"]
        approved = bob.post(
            f"/api/v1/waivers/{waiver['id']}/approve", headers={"X-CSRF-Token": bob_csrf}
        )
        assert approved.status_code == 200, approved.text
        assert (approved.json()["state"], approved.json()["approved_by"]) == ("effective", "bob")
        detail = bob.get(f"/api/v1/hosts/{host.id}").json()
        assert {r["check_id"]: r["waived"] for r in detail["results"]}[FAILING_CHECK] is True
    entries = api.service.audit.entries()
    steps = [(e.actor, e.action, e.outcome) for e in entries if e.action.startswith("waiver.")]
    assert steps == [("alice", "waiver.request", "ok"), ("alice", "waiver.approve", "denied"),
                     ("bob", "waiver.approve", "ok")]  # fmt: skip


def test_a_csv_report_downloads_with_its_digests(api: ApiServer) -> None:
    with api.client("auditor") as client:
        answer = client.post("/api/v1/reports", json={"format": "csv", "group": "Police"})
        assert answer.status_code == 200, answer.text
        verified = client.post("/api/v1/reports/verify", content=answer.content,
                               headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        altered = client.post("/api/v1/reports/verify", content=answer.content + b"x",
                              headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {row["hostname"] for row in rows} == {"pd-1", "pd-2"}
    assert verified.json()["issued"] is True
    assert verified.json()["sha256"] == answer.headers["x-report-sha256"]
    assert altered.json()["issued"] is False
    # Sent from its spooled file: whole, with its length and the digest of these bytes.
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert hashlib.sha256(answer.content).hexdigest() == answer.headers["x-report-sha256"]


def test_every_report_format_downloads(api: ApiServer) -> None:
    starts = {"json": b"{", "html": b"<!doctype html", "pdf": b"%PDF", "table": b"Posture"}
    with api.client("auditor") as client:
        for fmt, start in starts.items():
            answer = client.post("/api/v1/reports", json={"format": fmt, "framework": "cjis"})
            assert answer.status_code == 200, (fmt, answer.text)
            assert answer.content.lower().startswith(start.lower()), fmt
        past = client.post("/api/v1/reports", json={"as_of": "2000-01-01T00:00:00Z"})
        assert past.status_code == 200 and past.json()["hosts"] == []
        future = client.post("/api/v1/reports", json={"as_of": "2999-01-01T00:00:00Z"})
        assert future.status_code == 400 and "future" in future.json()["error"]["message"]


def test_collect_now_is_queued_for_the_agent_and_says_whether_it_streams(api: ApiServer) -> None:
    host = api.hosts["pd-2"]
    registry = registry_for(api.service)
    with api.client("analyst") as client:
        answer = client.post(f"/api/v1/hosts/{host.id}/collect")
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"host_id": host.id, "queued": True, "stream_open": False}
        woken: list[int] = []
        handle = registry.stream_opened(host.id, lambda: woken.append(host.id))
        again = client.post(f"/api/v1/hosts/{host.id}/collect")
        registry.stream_closed(host.id, handle)
        assert again.json()["stream_open"] is True and woken == [host.id]
        assert client.post("/api/v1/hosts/999999/collect").status_code == 404
    pending = registry.take(host.id)
    assert pending is not None and pending.requested_by == "token:analyst-token"
    assert registry.take(host.id) is None


def test_enroll_secrets_are_shown_once_and_admin_only(api: ApiServer) -> None:
    with api.client("admin") as admin, api.client("analyst") as analyst:
        created = admin.post("/api/v1/enroll-secrets", json={"name": "fire", "group": "Fire"})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        listed = admin.get("/api/v1/enroll-secrets").text
        assert secret not in listed and "fire" in listed
        assert analyst.get("/api/v1/enroll-secrets").status_code == 403
        assert admin.post("/api/v1/enroll-secrets/fire/revoke").status_code == 200
        assert admin.post("/api/v1/enroll-secrets/fire/revoke").status_code == 400
    actions = [(e.action, e.outcome) for e in api.service.audit.entries()]
    assert ("enroll_secret.create", "ok") in actions
    assert ("enroll_secret.revoke", "denied") in actions
    assert ("permission.secrets", "denied") in actions


def test_baseline_approval_and_group_rules_are_audited_with_the_principal(api: ApiServer) -> None:
    host = api.hosts["pd-1"]
    with api.client("analyst") as client:
        assert client.post(f"/api/v1/hosts/{host.id}/baseline").status_code == 200
        rule = client.post("/api/v1/group-rules", json={"group": "Labs", "hostname_glob": "pd-*"})
        assert rule.status_code == 201, rule.text
        hosts = client.get("/api/v1/hosts", params={"group": "Labs"}).json()
        assert [i["host"]["hostname"] for i in hosts["items"]] == ["pd-1", "pd-2"]
        assert client.delete(f"/api/v1/group-rules/{rule.json()['id']}").status_code == 204
        assert client.get("/api/v1/hosts/1/baseline").status_code == 200
    actors = {(e.actor, e.action) for e in api.service.audit.entries()}
    assert ("token:analyst-token", "baseline.approve") in actors
    assert ("token:analyst-token", "group_rule.add") in actors
    assert ("token:analyst-token", "group_rule.delete") in actors
