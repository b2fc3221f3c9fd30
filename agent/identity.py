"""Who this machine is: its identity facts, and with mTLS its key and client certificate.

The identity is read through the same sources as any other fact. Under mTLS the agent
generates its own ECDSA P-256 key, sends the collector only a certificate signing request,
and keeps the key and the certificate the collector's CA signed in one file (certificate,
then key), replaced atomically, so a crash can never leave a new certificate beside an old
key. The collector knows the host by that certificate's fingerprint.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.collect import collect
from agent.plan import CollectionPlan
from agent.sources import platform
from agent.sources.base import FactSource, TableRequest

# cryptography (15 MB of memory, 80 ms to import) is imported by the functions that use it:
# an agent that authenticates with a credential, not a client certificate, never needs it.

__all__ = [
    "ClientTls",
    "host_identity",
    "new_key",
    "renewal_due",
    "request_token",
    "signing_request",
]

_PLAN = CollectionPlan("identity", 300, (TableRequest("system_info"), TableRequest("os_version")))
_PEM_KEY = b"-----BEGIN PRIVATE KEY-----"


def host_identity(sources: Sequence[FactSource], agent_version: str) -> dict[str, str]:
    """The HostIdentity fields for enrollment; raises ValueError when no UUID can be read."""
    tables = collect(_PLAN, sources).tables
    system = next(iter(tables["system_info"].rows), {})
    os_row = next(iter(tables["os_version"].rows), {})
    uuid = system.get("uuid", "")
    if not uuid:
        reason = tables["system_info"].error or "system_info has no uuid"
        raise ValueError(f"cannot identify this machine: {reason}")
    return {
        "hardware_uuid": uuid,
        "hardware_serial": system.get("hardware_serial", ""),
        "hostname": system.get("hostname", "") or socket.gethostname(),
        "platform": platform(),
        "os_version": f"{os_row.get('name', '')} {os_row.get('version', '')}".strip(),
        "agent_version": agent_version,
    }


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only, atomically (a temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    import tempfile  # with shutil, bz2 and lzma: only when writing a key or certificate

    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def request_token(state_dir: Path) -> str:
    """The random token this agent sends with every enrollment attempt until enrolled.

    Kept across attempts so a re-enrollment request waiting for an administrator can be
    collected by this agent, and only by it, once approved.
    """
    path = state_dir / "enroll-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    _write_private(path, token.encode())
    return token


def new_key() -> bytes:
    """A fresh ECDSA P-256 private key, PEM (PKCS#8)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def signing_request(key_pem: bytes, hostname: str) -> bytes:
    """A CSR for ``key_pem``. The collector ignores its subject: only the key matters."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the agent's key is not an ECDSA key")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def renewal_due(certificate_pem: bytes, now: datetime) -> bool:
    """Renew once two thirds of the lifetime have passed: a 30-day certificate after 20
    days, leaving 10 for an agent that was off or offline to come back and renew."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(certificate_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * 2 / 3


@dataclass(frozen=True)
class ClientTls:
    """The agent's TLS material in one directory: ``ca.pem`` (the collector's CA) and
    ``client.pem`` (the client certificate followed by its key)."""

    directory: Path

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def bundle_path(self) -> Path:
        return self.directory / "client.pem"

    def exists(self) -> bool:
        return self.bundle_path.exists()

    def load(self) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM)."""
        data = self.bundle_path.read_bytes()
        split = data.find(_PEM_KEY)
        if split <= 0:
            raise ValueError(f"{self.bundle_path} holds no certificate and key")
        return data[:split], data[split:]

    def save(self, certificate_pem: bytes, key_pem: bytes) -> None:
        _write_private(self.bundle_path, certificate_pem.rstrip(b"\n") + b"\n" + key_pem)

    def save_ca(self, ca_pem: bytes) -> None:
        _write_private(self.ca_path, ca_pem)
