"""Who may be a host: enroll secrets, enrollment, re-enrollment approval, client certificates,
authentication and revocation.

Enrollment trades a live enroll secret for a new host. A machine whose hardware identity is
enrolled already does **not** take that host over: its request waits in a pending list until
an administrator approves or denies it, so a cloned laptop or a rogue machine that copied a
host's UUID and serial cannot inherit the host's history or impersonate it. Each request is
bound to a random token the requesting agent keeps, so only that agent can collect an
approval. Approval revokes the host's old credential and certificates at once.

With mTLS (``ca`` set), every host also gets a short-lived client certificate for a key it
generated; the host is then known by the certificate's fingerprint, which the transport
reads from the TLS handshake, never from a message.

Secrets and credentials are 256-bit random values kept only as SHA-256 digests. A lookup
by digest compares digests, not secrets: its timing can tell an attacker at most how a
digest of their guess relates to stored digests, which gives no way to build a secret
(that would need a SHA-256 preimage); the final comparison is constant-time as well.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from collector.audit import AuditLog
from collector.enrollment import (
    ClientCertificate,
    DenyList,
    EnrollmentRequest,
    EnrollSecretRecord,
    RequestState,
    lifetime_ok,
)
from collector.errors import (
    AlreadyEnrolledError,
    AuthenticationError,
    PendingApprovalError,
    PermissionDeniedError,
    ServiceError,
)
from collector.groups import valid_group_name
from collector.model import Host, HostIdentity
from collector.store import HostExistsError, SqliteStore
from collector.store.hosts import SecretSpentError
from collector.store.identity import NewRequest
from collector.tls import CertificateError, ClientCa, IssuedCertificate, check_csr

__all__ = ["Admission", "IdentityService", "hash_secret"]

log = logging.getLogger("posture.collector")

#: The default lifetime of a client certificate; agents renew at two thirds of it.
DEFAULT_CERT_LIFETIME = timedelta(days=30)
_PLATFORMS = frozenset({"linux", "darwin", "windows"})


def hash_secret(secret: str) -> str:
    """Secrets and credentials are 256-bit random values, so SHA-256 suffices to store them."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _token() -> str:
    """256 random bits, URL-safe, never starting with "-": a secret pasted after
    ``--secret`` must not read as an option (1 in 64 would)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


@dataclass(frozen=True)
class Admission:
    """A completed enrollment: the host, its new credential and (with mTLS) certificate."""

    host: Host
    credential: str
    certificate: IssuedCertificate | None = None


@dataclass(frozen=True)
class _Ask:
    """One enrollment attempt as the agent made it."""

    secret: EnrollSecretRecord
    identity: HostIdentity
    csr_pem: bytes
    token: str
    peer: str


class IdentityService:
    def __init__(
        self,
        store: SqliteStore,
        audit: AuditLog,
        clock: Callable[[], datetime],
        interval_seconds: int,
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self.interval_seconds = interval_seconds
        #: Set by ``serve --mtls``: enrollment then issues client certificates.
        self.ca: ClientCa | None = None
        self.cert_lifetime = DEFAULT_CERT_LIFETIME
        self.deny = DenyList()

    def use_ca(self, ca: ClientCa, lifetime: timedelta = DEFAULT_CERT_LIFETIME) -> None:
        self.ca, self.cert_lifetime = ca, lifetime_ok(lifetime)

    # Enroll secrets ------------------------------------------------------------------------

    def create_secret(
        self,
        name: str,
        group: str | None = None,
        *,
        expires_in: timedelta | None = None,
        max_uses: int | None = None,
        actor: str | None = None,
    ) -> tuple[EnrollSecretRecord, str]:
        """A new secret, returned in clear exactly once; only its hash is kept.

        Recorded in the audit log under ``actor``; None leaves the record to a caller that
        audits on its own (the web API)."""
        if group is not None and not valid_group_name(group):
            raise ServiceError(f"invalid group name {group!r}: letters, digits, ' -_.' only")
        if max_uses is not None and max_uses < 1:
            raise ServiceError("--max-uses must be at least 1")
        now = self.clock()
        secret = _token()
        expires_at = now + expires_in if expires_in else None
        record = self.store.create_enroll_secret(
            name, hash_secret(secret), now, group, expires_at, max_uses
        )
        detail = {"group": group, "expires_at": expires_at, "max_uses": max_uses}
        self._audit(actor, "enroll_secret.create", f"enroll_secret:{name}", "ok", detail)
        return record, secret

    def _audit(
        self,
        actor: str | None,
        action: str,
        target: str,
        outcome: str,
        detail: Mapping[str, object],
    ) -> None:
        if actor is not None:
            self.audit.record(actor, action, target, outcome, detail)

    def revoke_secret(self, name: str, actor: str | None = None) -> int:
        count = self.store.revoke_enroll_secret(name, self.clock())
        outcome = "ok" if count else "error"
        target = f"enroll_secret:{name}"
        self._audit(actor, "enroll_secret.revoke", target, outcome, {"revoked": count})
        if not count:
            raise ServiceError(f"no live enroll secret named {name!r}")
        return count

    def _live_secret(self, secret: str) -> EnrollSecretRecord:
        record = self.store.find_enroll_secret(hash_secret(secret)) if secret else None
        if record is None:
            raise AuthenticationError("enroll secret is wrong or revoked")
        if (refusal := record.refusal(self.clock())) is not None:
            raise PermissionDeniedError(refusal)
        return record

    # Enrollment ----------------------------------------------------------------------------

    def enroll(
        self,
        enroll_secret: str,
        identity: HostIdentity,
        *,
        csr_pem: bytes = b"",
        token: str = "",
        peer: str = "",
    ) -> Admission:
        """A new host, or (for an identity enrolled already) a re-enrollment request.

        Raises PendingApprovalError while an administrator has not decided, and
        PermissionDeniedError once they denied it.
        """
        ask = _Ask(self._live_secret(enroll_secret), identity, csr_pem, token, peer)
        self._check_request(ask)
        existing = self.store.host_by_identity(identity)
        if existing is not None:
            return self._reenroll(existing, ask)
        credential = secrets.token_urlsafe(32)
        try:
            host = self.store.create_host(
                identity, hash_secret(credential), ask.secret, self.interval_seconds, self.clock()
            )
        except HostExistsError:  # enrolled a moment ago by another request
            host_id = self.store.host_by_identity(identity)
            assert host_id is not None
            return self._reenroll(host_id, ask)
        except SecretSpentError:
            refusal = ask.secret.refusal(self.clock()) or "enroll secret is no longer live"
            raise PermissionDeniedError(refusal) from None
        return Admission(host, credential, self._issue(host.id, csr_pem))

    def _check_request(self, ask: _Ask) -> None:
        if not ask.identity.hardware_uuid or ask.identity.platform not in _PLATFORMS:
            raise ServiceError("host identity needs a hardware_uuid and a known platform")
        if self.ca is None:
            return
        if not ask.csr_pem:
            raise ServiceError(
                "this collector requires mTLS: the enrollment needs a certificate signing"
                " request (csr_pem); upgrade the agent"
            )
        try:
            check_csr(ask.csr_pem)
        except CertificateError as error:
            raise ServiceError(str(error)) from None

    def _reenroll(self, host_id: int, ask: _Ask) -> Admission:
        if not ask.token:
            raise AlreadyEnrolledError(
                f"a host with hardware uuid {ask.identity.hardware_uuid} is already enrolled;"
                " re-enrolling it needs an administrator (and an agent that sends a request"
                " token)"
            )
        request = self.store.enrollment_request_for(host_id, hash_secret(ask.token))
        if request is None or request.state is RequestState.PENDING:
            request = self._file_request(host_id, ask)
            raise PendingApprovalError(
                f"host {host_id} ({request.identity.hostname}) is already enrolled;"
                f" re-enrollment request {request.id} waits for an administrator"
                f" (posture-collector enrollment approve {request.id}); retry later",
                request.id,
            )
        if request.state is RequestState.DENIED:
            raise PermissionDeniedError(
                f"re-enrollment request {request.id} for host {host_id} was denied by"
                f" {request.decided_by}: {request.reason or 'no reason given'}"
            )
        if request.state is RequestState.COMPLETED:
            raise PermissionDeniedError(
                f"re-enrollment request {request.id} was completed already; a token works once"
            )
        return self._take_over(request, ask)

    def _file_request(self, host_id: int, ask: _Ask) -> EnrollmentRequest:
        new = NewRequest(host_id, hash_secret(ask.token), ask.secret.id, ask.identity, ask.peer)
        request = self.store.add_enrollment_request(new, self.clock())
        if request.attempts == 1:
            log.warning(
                "re-enrollment request %d: %s (%s) from %s claims host %d; waiting for an admin",
                request.id, ask.identity.hostname, ask.identity.hardware_uuid, ask.peer, host_id,
            )  # fmt: skip
            detail = {"request": request.id, "hostname": ask.identity.hostname, "peer": ask.peer}
            self.audit.record(
                f"enroll_secret:{ask.secret.name}", "enrollment.request", f"host:{host_id}",
                "ok", detail,
            )  # fmt: skip
        return request

    def _take_over(self, request: EnrollmentRequest, ask: _Ask) -> Admission:
        """The approved agent becomes the host: same id and history, a new credential."""
        credential = secrets.token_urlsafe(32)
        approved = replace(request, identity=ask.identity)
        if not self.store.complete_enrollment_request(
            approved, hash_secret(credential), self.clock()
        ):
            raise PermissionDeniedError(f"re-enrollment request {request.id} is no longer approved")
        self.refresh_deny_list()  # the host's credential is live again, for this agent
        host = self.store.get_host(request.host_id)
        assert host is not None
        log.info("re-enrollment request %d completed: host %d", request.id, host.id)
        return Admission(host, credential, self._issue(host.id, ask.csr_pem))

    def _issue(self, host_id: int, csr_pem: bytes) -> IssuedCertificate | None:
        if self.ca is None or not csr_pem:
            return None
        now = self.clock()
        issued = self.ca.issue(csr_pem, host_id, self.cert_lifetime, now)
        self.store.add_certificate(
            ClientCertificate(
                issued.fingerprint, host_id, issued.serial, issued.not_before,
                issued.not_after, now,
            )
        )  # fmt: skip
        return issued

    # Approval ------------------------------------------------------------------------------

    def pending_requests(self, include_decided: bool = False) -> list[EnrollmentRequest]:
        states = tuple(RequestState) if include_decided else (RequestState.PENDING,)
        return self.store.enrollment_requests(states)

    def decide(self, request_id: int, approve: bool, actor: str, reason: str = "") -> None:
        """Approve (the old credential and certificates are revoked now) or deny a request."""
        request = self.store.enrollment_request(request_id)
        action = "enrollment.approve" if approve else "enrollment.deny"
        target = f"enrollment_request:{request_id}"
        if request is None or request.state is not RequestState.PENDING:
            state = "unknown" if request is None else request.state.value
            self.audit.record(actor, action, target, "error", {"state": state})
            raise ServiceError(f"enrollment request {request_id} is not pending ({state})")
        if not self.store.decide_enrollment_request(
            request_id, approve, actor, reason, self.clock()
        ):
            raise ServiceError(f"enrollment request {request_id} was decided meanwhile")
        if approve:
            self.deny.add_host(request.host_id)
        detail = {"host": request.host_id, "hostname": request.identity.hostname}
        self.audit.record(actor, action, target, "ok", detail | {"reason": reason})

    # Authentication and revocation ---------------------------------------------------------

    def authenticate(self, credential: str) -> Host:
        host = self.store.host_by_credential(hash_secret(credential)) if credential else None
        if host is None:
            raise AuthenticationError("unknown agent credential")
        if host.credential_revoked:
            raise AuthenticationError(f"agent credential of host {host.id} is revoked")
        return host

    def authenticate_certificate(self, fingerprint: str) -> Host:
        """The host a verified client certificate (by its fingerprint) belongs to."""
        certificate = self.store.certificate(fingerprint)
        if certificate is None:
            raise AuthenticationError("unknown client certificate; enroll this agent again")
        if certificate.revoked_at is not None:
            raise AuthenticationError(
                f"client certificate of host {certificate.host_id} is revoked"
                f" ({certificate.revoke_reason or 'by an administrator'})"
            )
        host = self.store.get_host(certificate.host_id)
        if host is None or host.credential_revoked:
            raise AuthenticationError(f"agent credential of host {certificate.host_id} is revoked")
        return host

    def renew(self, fingerprint: str, csr_pem: bytes) -> IssuedCertificate:
        """A new certificate for the host holding this (valid, unrevoked) certificate."""
        host = self.authenticate_certificate(fingerprint)
        if self.ca is None:
            raise ServiceError("this collector does not issue client certificates (no --mtls)")
        try:
            check_csr(csr_pem)
        except CertificateError as error:
            raise ServiceError(str(error)) from None
        issued = self._issue(host.id, csr_pem)
        assert issued is not None
        log.info("renewed the client certificate of host %d", host.id)
        return issued

    def revoke_host(self, host: Host, actor: str | None = None) -> int:
        """Refuse the host's agent from now on: its credential and every certificate."""
        now = self.clock()
        self.store.revoke_credential(host.id, now)
        by = f"revoked by {actor}" if actor else "revoked by an administrator"
        revoked = self.store.revoke_host_certificates(host.id, now, by)
        self.deny.add_host(host.id)
        detail = {"hostname": host.identity.hostname, "certificates": revoked}
        self._audit(actor, "credential.revoke", f"host:{host.id}", "ok", detail)
        return revoked

    def refresh_deny_list(self) -> None:
        """Reload the deny list (revocations made by other processes show up here)."""
        self.deny.replace(self.store.revoked_sets(self.clock()))
