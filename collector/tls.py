"""The collector's certificate authority: the local CA, and client certificates for mTLS.

``ensure_local_pki`` makes a private CA and a server certificate so TLS is on from the first
run rather than an afterthought (production deployments may bring their own server
certificate). With ``serve --mtls`` the same CA signs each agent's client certificate
(``ClientCa``): the agent keeps its private key, sends only a CSR, and the certificate binds
that key to a host id for a short lifetime. ECDSA P-256 keys: GOALS.md measured TLS
handshakes 30-40 % cheaper than RSA on the server.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateError",
    "ClientCa",
    "IssuedCertificate",
    "LocalPki",
    "check_csr",
    "ensure_local_pki",
    "fingerprint",
]


@dataclass(frozen=True)
class LocalPki:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Posture local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _sans(hostnames: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(names)


def _issue_ca(now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Posture local CA"))
        .issuer_name(_name("Posture local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue_server(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, hostnames: list[str], now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(_sans(hostnames), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def ensure_local_pki(directory: Path, hostnames: list[str] | None = None) -> LocalPki:
    """Create a CA and a server certificate in ``directory`` unless they exist already."""
    pki = LocalPki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if all(path.exists() for path in (pki.ca_cert, pki.server_cert, pki.server_key)):
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key, ca = _issue_ca(now)
    key, cert = _issue_server(ca_key, ca, hostnames or ["localhost", "127.0.0.1", "::1"], now)
    _write_key(directory / "ca.key", ca_key)
    _write_key(pki.server_key, key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


class CertificateError(ValueError):
    """A CSR or certificate we will not accept; the message says why."""


@dataclass(frozen=True)
class IssuedCertificate:
    pem: bytes
    fingerprint: str
    serial: str
    not_before: datetime
    not_after: datetime


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, hex: the host's identity under mTLS."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise CertificateError(f"not a PEM certificate: {error}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


#: Largest CSR accepted: a P-256 CSR is about 400 bytes, an RSA-4096 one under 2 KiB.
MAX_CSR_BYTES = 8192


def check_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A CSR whose signature proves possession of a key strong enough to trust."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CertificateError(f"certificate signing request larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise CertificateError(f"not a PEM certificate signing request: {error}") from None
    if not csr.is_signature_valid:
        raise CertificateError("certificate signing request has an invalid signature")
    key = csr.public_key()
    strong = (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 256) or (
        isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    )
    if not strong:
        raise CertificateError("client keys must be ECDSA P-256 or stronger, or RSA-2048+")
    return csr


class ClientCa:
    """Signs agents' client certificates with the collector's CA key.

    Only the CSR's public key is used: the subject is the collector's own (``posture host
    N``), so nothing an agent writes in its CSR can claim another host or a CA's powers.
    """

    def __init__(self, ca_cert: Path, ca_key: Path) -> None:
        self.ca_pem = ca_cert.read_bytes()
        self._ca = x509.load_pem_x509_certificate(self.ca_pem)
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{ca_key} is not an ECDSA CA key")
        self._key = key

    @classmethod
    def from_dir(cls, directory: Path) -> ClientCa:
        """The CA ``ensure_local_pki`` made in ``directory`` (``ca.pem`` and ``ca.key``)."""
        return cls(directory / "ca.pem", directory / "ca.key")

    def issue(
        self, csr_pem: bytes, host_id: int, lifetime: timedelta, now: datetime
    ) -> IssuedCertificate:
        csr = check_csr(csr_pem)
        not_before = now - timedelta(minutes=5)  # tolerate agents' clocks a little behind
        not_after = now + lifetime
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"posture host {host_id}"))
            .issuer_name(self._ca.subject)
            .public_key(csr.public_key())
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return IssuedCertificate(pem, fingerprint(pem), format(serial, "x"), not_before, not_after)
