"""Reading results per check, on every engine: what re-evaluating a delta reads.

``results_for`` with check ids returns exactly those checks' results (in check id order,
however many ids: the ``IN`` lists are chunked), ``prior_results`` what ``save_results``
compares with, and ``host_statuses`` every status without evidence.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from collector.model import Host, HostIdentity, StoredResult
from collector.policy.model import Status
from collector.store import SqliteStore

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
#: More checks than one ``IN`` list holds (``_IDS_PER_QUERY``), so reads take several.
MANY = 1234
EVIDENCE = ({"username": "root", "uid": "0"}, {"username": "toor", "uid": "0"})


def _host(store: SqliteStore, name: str) -> Host:
    secret = store.find_live_enroll_secret("hash-of-secret")
    if secret is None:
        secret = store.create_enroll_secret("test", "hash-of-secret", T0)
    identity = HostIdentity(f"UUID-{name}", f"SN-{name}", name, "linux", "Debian 12", "0.1.0")
    return store.create_host(identity, f"cred-{name}", secret, 300, T0)


def _result(host: Host, n: int, status: Status = Status.PASS) -> StoredResult:
    evidence = ({"n": str(n)},) if n % 3 else ()
    return StoredResult(host.id, f"check.{n:05d}", status, "", evidence, T0, T0)


def test_results_for_reads_exactly_the_checks_asked_for(store: SqliteStore) -> None:
    host, other = _host(store, "pd-1"), _host(store, "pd-2")
    store.save_results(host.id, [_result(host, n) for n in range(MANY)], T0)
    store.save_results(other.id, [_result(other, n, Status.FAIL) for n in range(5)], T0)
    every = store.results_for(host.id)
    assert [r.check_id for r in every] == [f"check.{n:05d}" for n in range(MANY)]

    wanted = [f"check.{n:05d}" for n in range(MANY - 1, -1, -2)]  # odd ones, reversed
    subset = store.results_for(host.id, [*wanted, "check.99999", wanted[0]])
    assert subset == [r for r in every if r.check_id in set(wanted)]
    assert store.results_for(host.id, []) == []
    assert store.results_for(other.id, ["check.00001", "check.00007"]) == [
        _result(other, 1, Status.FAIL)
    ]
    statuses = store.host_statuses(host.id)
    assert statuses == {r.check_id: Status.PASS for r in every}
    assert store.host_statuses(other.id) == {f"check.{n:05d}": Status.FAIL for n in range(5)}


def test_prior_results_keep_evidence_encoded_and_compare_by_value(store: SqliteStore) -> None:
    host = _host(store, "pd-1")
    check = "test.check"
    fail = StoredResult(host.id, check, Status.FAIL, "", EVIDENCE, T0, T0)
    store.save_results(host.id, [fail], T0)
    (prior,) = store.prior_results(host.id, [check, "absent"]).values()
    assert (prior.check_id, prior.status, prior.changed_at) == (check, Status.FAIL, T0)
    assert json.loads(prior.evidence_json) == list(EVIDENCE)
    # Evidence stored in another spelling (an older writer's) is the same evidence.
    spelled = json.dumps(list(EVIDENCE), indent=2)
    store.conn.execute("UPDATE results SET evidence_json = ? WHERE check_id = ?", (spelled, check))
    changes = len(store.transitions_for(host.id))
    later = T0 + timedelta(minutes=5)
    assert store.save_results(host.id, [fail], later) == []
    assert len(store.transitions_for(host.id)) == changes
    (latest,) = store.results_for(host.id, [check])
    assert latest.changed_at == T0 and latest.evaluated_at == later

    fewer = StoredResult(host.id, check, Status.FAIL, "", EVIDENCE[:1], later, later)
    assert store.save_results(host.id, [fewer], later + timedelta(minutes=5)) == []
    transitions = store.transitions_for(host.id)
    assert [(t["old_status"], t["new_status"]) for t in transitions[changes:]] == [
        ("fail", "fail")  # only the evidence changed: recorded, no status change
    ]
    (latest,) = store.results_for(host.id, [check])
    assert latest.evidence == EVIDENCE[:1] and latest.changed_at == T0
