"""Enrolling this machine: the secret and identity for a credential, and with mTLS a client
certificate for a key generated here.

The agent always sends a CSR (a P-256 key costs a millisecond): a collector serving mTLS
answers with a certificate, which is then stored with the CA in ``STATE_DIR/tls`` so every
later connection presents it; any other collector ignores the CSR. A machine the collector
knows already gets a re-enrollment request waiting for an administrator; with ``wait`` the
agent retries until it is approved (or denied), always with the same request token.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from agent.identity import ClientTls, new_key, request_token, signing_request
from agent.plan import CollectionPlan
from agent.spool import Enrollment
from agent.transport import Enrolled, TransportError, enroll_agent, open_channel

__all__ = ["EnrollOptions", "enroll_machine"]

log = logging.getLogger("posture.agent")


@dataclass(frozen=True)
class EnrollOptions:
    #: Where the agent streams (the collector's main listener).
    collector: str
    #: Where it enrolls: the enrollment listener of an mTLS collector, else ``collector``.
    enroll_address: str
    ca_cert: Path
    secret: str
    state_dir: Path
    #: Retry while a re-enrollment request waits for an administrator.
    wait: bool = False
    retry_seconds: float = 60.0


async def _attempts(options: EnrollOptions, identity: dict[str, str], csr: bytes) -> Enrolled:
    token = request_token(options.state_dir)
    while True:
        try:
            async with open_channel(options.enroll_address, options.ca_cert) as channel:
                return await enroll_agent(
                    channel, options.secret, identity, csr_pem=csr, token=token
                )
        except TransportError as error:
            if not (error.pending and options.wait):
                raise
            log.warning("%s; retrying in %.0f s", error.details, options.retry_seconds)
            await asyncio.sleep(options.retry_seconds)


async def enroll_machine(
    options: EnrollOptions, identity: dict[str, str]
) -> tuple[Enrollment, CollectionPlan]:
    """Enroll; returns what the spool keeps: the enrollment record and the first plan."""
    key = await asyncio.to_thread(new_key)
    csr = signing_request(key, identity.get("hostname", ""))
    enrolled = await _attempts(options, identity, csr)
    ca_path = options.ca_cert.resolve()
    if enrolled.certificate_pem:
        tls = ClientTls(options.state_dir / "tls")
        await asyncio.to_thread(tls.save_ca, options.ca_cert.read_bytes())
        await asyncio.to_thread(tls.save, enrolled.certificate_pem, key)
        ca_path = tls.ca_path.resolve()
    (options.state_dir / "enroll-token").unlink(missing_ok=True)
    record = Enrollment(options.collector, str(ca_path), enrolled.host_id, enrolled.credential)
    return record, enrolled.plan
