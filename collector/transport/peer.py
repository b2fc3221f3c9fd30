"""Who is on the other end of a call: what the TLS handshake established, checked again.

Agents resume TLS sessions (``agent.transport``): a resumed TLS 1.3 session skips the
certificate exchange, and gRPC hands the servicer the certificate of the connection that
created the session (measured with grpcio 1.85: ``x509_pem_cert`` is still there, and
``ssl_session_reused`` says ``true``). Identity survives resumption, but **verification does
not**: BoringSSL does not look at the certificate's dates again, and a ticket lives up to
two days (seven with renewals), so a certificate that expired since would still be accepted.
This module therefore checks the validity window itself on every call that relies on the
certificate; revocation is checked by the domain (``IdentityService``) on every stream and
by the deny list on every message, whichever way the session began.

Parsing a certificate costs tens of microseconds; each distinct certificate is parsed once
(a small bounded cache), since the same few thousand agents reconnect all day.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from collector.errors import AuthenticationError

__all__ = ["AuthContext", "PeerCertificate", "peer_certificate", "session_resumed"]

#: ``context.auth_context()``: property name -> values. Building it costs the event loop
#: about 0.1 ms (the certificate PEMs are copied each time), so a call reads it once.
AuthContext = Mapping[str, Iterable[bytes]]


@dataclass(frozen=True)
class PeerCertificate:
    """The verified client certificate's fingerprint (the host's identity) and window."""

    fingerprint: str
    not_before: datetime
    not_after: datetime


@lru_cache(maxsize=4096)
def _parse(pem: bytes) -> PeerCertificate | None:
    """The certificate's fingerprint and validity window; None when it does not parse."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return PeerCertificate(digest, cert.not_valid_before_utc, cert.not_valid_after_utc)


def peer_certificate(auth: AuthContext, now: datetime | None = None) -> PeerCertificate | None:
    """The client certificate of a call's connection (``auth``), if it presented one.

    Raises ``AuthenticationError`` when the certificate is outside its validity window at
    ``now``: only a resumed session can carry one (a full handshake refuses it), and it is
    refused all the same.
    """
    certificates = list(auth.get("x509_pem_cert") or [])
    if not certificates:
        return None
    peer = _parse(bytes(certificates[0]))
    if peer is None:
        return None
    at = now or datetime.now(UTC)
    if at > peer.not_after:
        raise AuthenticationError(
            f"client certificate expired at {peer.not_after.isoformat()}; enroll this agent again"
        )
    if at < peer.not_before:
        raise AuthenticationError(
            f"client certificate is not valid before {peer.not_before.isoformat()}"
        )
    return peer


def session_resumed(auth: AuthContext) -> bool:
    """Whether a call's connection (``auth``) resumed an earlier TLS session."""
    values = auth.get("ssl_session_reused") or []
    return any(value in (b"true", "true") for value in values)
