"""What a new connection costs the server: plaintext, TLS and mTLS, full or resumed.

    .venv/bin/python -m benchmarks.handshake --connections 300 --rounds 3

The daemon opens a connection per report (an idle stream costs the collector memory), so
each report pays a connection: TCP, HTTP/2 setup, the TLS handshake and one call. This
measures that cost alone, without the collector's own work: a grpc.aio server in a child
process (the collector's certificates, ECDSA P-256, from ``ensure_local_pki``) answers one
health check per connection, and its CPU (``psutil``, all threads) is divided by the
connections made. The client resumes sessions through ``agent.transport.TlsSessions``, as
the agent does. Rounds alternate full and resumed so that the machine's noise hits both.

Reading the result: TLS 1.3 resumption skips the certificate exchange (the server's
signature, and under mTLS its verification of the client's chain) but still makes a fresh
key exchange, so it saves the server something only under mTLS.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.identity import new_key, signing_request
from agent.transport import TlsSessions
from benchmarks.common import median
from collector.tls import ClientCa, ensure_local_pki

__all__ = ["main"]

MODES = ("plain", "tls", "mtls")


class _Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped stubs
    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: object
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _serve(pki_dir: Path, mode: str) -> None:
    pki = ensure_local_pki(pki_dir)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)
    if mode == "plain":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        mtls = mode == "mtls"
        credentials = grpc.ssl_server_credentials(
            [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
            root_certificates=pki.ca_cert.read_bytes() if mtls else None,
            require_client_auth=mtls,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@dataclass(frozen=True)
class _Client:
    port: int
    mode: str
    credentials: grpc.ChannelCredentials | None

    def channel(self, sessions: TlsSessions | None) -> grpc.aio.Channel:
        target = f"127.0.0.1:{self.port}"
        options: list[tuple[str, object]] = [("grpc.use_local_subchannel_pool", 1)]
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options)
        options.append(("grpc.ssl_target_name_override", "localhost"))  # a name: resumable
        if sessions is not None:
            options.append(("grpc.ssl_session_cache", sessions.cache_for(b"benchmark")))
        return grpc.aio.secure_channel(target, self.credentials, options)

    async def connect(self, connections: int, resume: bool) -> None:
        sessions = TlsSessions() if resume else None
        for _ in range(connections):
            async with self.channel(sessions) as channel:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())


def _credentials(pki_dir: Path, mode: str) -> grpc.ChannelCredentials | None:
    if mode == "plain":
        return None
    pki = ensure_local_pki(pki_dir)
    root = pki.ca_cert.read_bytes()
    if mode == "tls":
        return grpc.ssl_channel_credentials(root)
    key = new_key()
    issued = ClientCa.from_dir(pki_dir).issue(
        signing_request(key, "benchmark"), 1, timedelta(days=1), datetime.now(UTC)
    )
    return grpc.ssl_channel_credentials(root, key, issued.pem)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _measure(pki_dir: Path, mode: str, connections: int, rounds: int) -> dict[bool, list[float]]:
    """Server CPU ms per connection, per round, keyed by resumed."""
    command = [sys.executable, "-m", "benchmarks.handshake", "--serve", mode, str(pki_dir)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    try:
        assert server.stdout is not None
        client = _Client(int(server.stdout.readline()), mode, _credentials(pki_dir, mode))
        process = psutil.Process(server.pid)
        spent: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for resume in (False, True):
                before = _cpu(process)
                asyncio.run(client.connect(connections, resume))
                spent[resume].append(1000 * (_cpu(process) - before) / connections)
        return spent
    finally:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handshake", description=__doc__)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", action="append", choices=MODES, help="default: all three")
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "PKI_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(Path(args.serve[1]), args.serve[0]))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="posture-handshake-") as scratch:
        pki_dir = Path(scratch) / "tls"
        ensure_local_pki(pki_dir)
        for mode in args.mode or MODES:
            spent = _measure(pki_dir, mode, args.connections, args.rounds)
            for resume in (False, True):
                if mode == "plain" and resume:
                    continue  # nothing to resume
                values = spent[resume]
                rows.append(
                    [
                        mode,
                        "resumed" if resume else "full",
                        f"{median(values):.2f}",
                        f"{min(values):.2f}-{max(values):.2f}",
                    ]
                )
    print(
        f"Server CPU per connection (one call each), ms: median and range of {args.rounds}"
        f" rounds of {args.connections} connections\n"
    )
    print("| mode | TLS session | server CPU ms | range |\n| --- | --- | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
