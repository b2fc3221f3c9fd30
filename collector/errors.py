"""The domain's refusals, one class per answer a caller needs to tell apart.

Transport turns each into its own status (gRPC code, HTTP status, exit code); the message
is written for the person or agent refused and is always safe to show them: it names what
was refused and what to do next, never a secret.
"""

from __future__ import annotations

__all__ = [
    "AlreadyEnrolledError",
    "AuthenticationError",
    "PendingApprovalError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServiceError",
]


class ServiceError(Exception):
    """A request the service refuses; the message is safe to show to the caller."""


class AuthenticationError(ServiceError):
    """Wrong, unknown or revoked secret, credential or certificate: who is this?"""


class PermissionDeniedError(ServiceError):
    """We know what was presented, and it may not do this (an expired, used-up or revoked
    enroll secret; a denied re-enrollment request)."""


class AlreadyEnrolledError(ServiceError):
    """This machine's identity is enrolled already; taking it over needs an admin."""


class PendingApprovalError(ServiceError):
    """A re-enrollment request waits for an administrator; the agent retries later."""

    def __init__(self, message: str, request_id: int) -> None:
        super().__init__(message)
        self.request_id = request_id


class RateLimitedError(ServiceError):
    """Over a rate limit; ``retry_after`` seconds from now the call would be accepted."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
