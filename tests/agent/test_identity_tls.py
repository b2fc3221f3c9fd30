"""The agent's mTLS material: its key and CSR, the bundle on disk, renewal timing, and the
request token that binds a re-enrollment request to this agent."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from agent.identity import ClientTls, new_key, renewal_due, request_token, signing_request
from collector.tls import ClientCa, LocalPki, fingerprint


def _issue(pki: LocalPki, key: bytes, now: datetime, lifetime: timedelta) -> bytes:
    ca = ClientCa.from_dir(pki.ca_cert.parent)
    return ca.issue(signing_request(key, "parks-laptop"), 7, lifetime, now).pem


def test_the_collector_signs_the_agents_key_under_its_own_subject(pki: LocalPki) -> None:
    key = new_key()
    pem = _issue(pki, key, datetime.now(UTC), timedelta(days=30))
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.rfc4514_string() == "CN=posture host 7,O=Posture local CA"
    csr = x509.load_pem_x509_csr(signing_request(key, "parks-laptop"))
    assert cert.public_key() == csr.public_key()
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [oid.dotted_string for oid in usage] == ["1.3.6.1.5.5.7.3.2"]  # clientAuth only
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_renewal_is_due_after_two_thirds_of_the_lifetime(pki: LocalPki) -> None:
    issued_at = datetime(2025, 3, 1, tzinfo=UTC)
    pem = _issue(pki, new_key(), issued_at, timedelta(days=30))
    start = issued_at - timedelta(minutes=5)  # backdated for clock skew
    due = start + (timedelta(days=30, minutes=5) * 2 / 3)
    assert not renewal_due(pem, due - timedelta(seconds=1))
    assert renewal_due(pem, due)


def test_the_bundle_round_trips_and_only_its_owner_can_read_it(
    pki: LocalPki, tmp_path: Path
) -> None:
    key = new_key()
    pem = _issue(pki, key, datetime.now(UTC), timedelta(days=1))
    tls = ClientTls(tmp_path / "tls")
    assert not tls.exists()
    tls.save(pem, key)
    tls.save_ca(pki.ca_cert.read_bytes())
    certificate, loaded_key = tls.load()
    assert fingerprint(certificate) == fingerprint(pem) and loaded_key == key
    for path in (tls.bundle_path, tls.ca_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    names = {path.name for path in tls.directory.iterdir()}
    assert names == {"ca.pem", "client.pem"}  # no temporary files left behind


def test_a_damaged_bundle_is_a_clear_error(tmp_path: Path) -> None:
    tls = ClientTls(tmp_path)
    tls.bundle_path.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot much\n")
    with pytest.raises(ValueError, match="holds no certificate and key"):
        tls.load()


def test_the_request_token_is_kept_until_enrollment(tmp_path: Path) -> None:
    first = request_token(tmp_path)
    assert len(first) >= 43 and request_token(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "enroll-token").stat().st_mode) == 0o600
    (tmp_path / "enroll-token").unlink()
    assert request_token(tmp_path) != first
