"""One agent flooding at 100x the normal rate: how much does it slow everyone else?

    python -m benchmarks.faults --flood
    python -m benchmarks.flood [--agents 4] [--interval 3] [--factor 100] [--window 90]

Real processes on 127.0.0.1, as in the fault harness: a collector and ``--agents`` normal
agents collecting every ``--interval`` seconds (the time-compressed stand-in for 5 minutes),
each logging when it sends a batch and when the ack arrives (``--delivery-log``). The normal
agents' ack latency (send to ack, as the agent sees it) is measured for ``--window`` seconds
alone, then for as long again while one more enrolled host sends ``--factor`` times as many
batches: a raw sender over the real gRPC stream (``benchmarks.flood_sender``), since a real
agent cannot collect that fast, which ignores acks and reconnects at once when refused.
Printed: each phase's p50 and p99, the ratio of the p99s (the target is < 2), and the rates
the flooder sent and had acknowledged (the collector's per-host limit holds it back).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import percentile
from benchmarks.fault_osquery import serve_churning_osqueryd
from benchmarks.fault_procs import AgentProc, CollectorProc
from benchmarks.fault_verify import read_delivery_logs
from benchmarks.flood_sender import RawFlooder

__all__ = ["FloodOptions", "FloodResult", "main", "print_flood", "run_flood"]


@dataclass(frozen=True)
class FloodOptions:
    agents: int = 4
    interval: float = 3.0
    factor: float = 100.0
    window: float = 90.0
    warmup: float = 8.0
    seed: int = 1
    workdir: Path | None = None


@dataclass(frozen=True)
class Phase:
    samples: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class FloodResult:
    options: FloodOptions
    alone: Phase
    flooded: Phase
    normal_rate: float
    flooder_sent_rate: float
    flooder_acked_rate: float
    flooder_refusals: dict[str, int]

    @property
    def ratio(self) -> float:
        return self.flooded.p99_ms / self.alone.p99_ms if self.alone.p99_ms else float("nan")


def _latencies(agents: list[AgentProc], start_ns: int, end_ns: int) -> list[float]:
    values = []
    for agent in agents:
        record = read_delivery_logs(agent.home)
        for key, sent in record.sent.items():
            acked = record.acked.get(key)
            if acked is not None and start_ns <= sent < end_ns:
                values.append((acked - sent) / 1e6)
    return values


def _phase(values: list[float]) -> Phase:
    return Phase(len(values), percentile(values, 0.5), percentile(values, 0.99))


def _window(seconds: float) -> tuple[int, int]:
    start = time.time_ns()
    time.sleep(seconds)
    return start, time.time_ns()


@contextmanager
def _fleet(
    options: FloodOptions, workdir: Path
) -> Iterator[tuple[CollectorProc, list[AgentProc], str]]:
    collector = CollectorProc(workdir / "collector")
    collector.workdir.mkdir(parents=True, exist_ok=True)
    agents = [
        AgentProc(i, workdir / f"agent-{i}", f"{workdir}/f{i}.em") for i in range(options.agents)
    ]
    with ExitStack() as stack:
        for agent in agents:
            stack.enter_context(serve_churning_osqueryd(agent.socket, f"flood-{agent.index}"))
            agent.home.mkdir(parents=True, exist_ok=True)
        collector.start()
        try:
            secret = collector.cli("enroll-secret", "create", "flood").strip().splitlines()[0]
            assert collector.pki is not None
            for agent in agents:
                if agent.enroll(collector.address, collector.pki.ca_cert, secret).wait(120):
                    raise RuntimeError(f"{agent.name} did not enroll; see {agent.home}")
            yield collector, agents, secret
        finally:
            for agent in agents:
                agent.kill()
            collector.stop()


def run_flood(options: FloodOptions) -> FloodResult:
    with ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        collector, normal, secret = stack.enter_context(_fleet(options, workdir))
        for agent in normal:
            agent.start("--collect-interval", str(options.interval))
        time.sleep(options.warmup)
        alone = _window(options.window)
        assert collector.pki is not None
        flooder = RawFlooder(
            collector.address,
            collector.pki.ca_cert.read_bytes(),
            secret,
            options.factor / options.interval,
        )
        flooder.start()
        time.sleep(options.warmup)
        flooded = _window(options.window)
        flooder.stop()
        seconds = (flooded[1] - flooded[0]) / 1e9

        def rate(events: list[int]) -> float:
            return sum(flooded[0] <= at < flooded[1] for at in events) / seconds

        alone_values = _latencies(normal, *alone)
        return FloodResult(
            options,
            _phase(alone_values),
            _phase(_latencies(normal, *flooded)),
            len(alone_values) / options.window / len(normal),
            rate(flooder.counts.sent),
            rate(flooder.counts.acked),
            dict(flooder.counts.refusals),
        )


def print_flood(result: FloodResult) -> None:
    o = result.options
    print(
        f"{o.agents} agents every {o.interval} s; one more host sends a batch every"
        f" {o.interval / o.factor:.3f} s (raw gRPC sender)"
    )
    print(f"{'':>26} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, phase in (("others, alone", result.alone), ("others, one flooding", result.flooded)):
        print(f"{name:>26} {phase.samples:>8} {phase.p50_ms:>8.1f} {phase.p99_ms:>8.1f}")
    print(f"p99 ratio (target < 2): {result.ratio:.2f}")
    print(
        f"flooder: sent {result.flooder_sent_rate:.1f}/s, acknowledged"
        f" {result.flooder_acked_rate:.1f}/s; a normal agent {result.normal_rate:.2f}/s"
        f" (achieved factor {result.flooder_sent_rate / max(result.normal_rate, 1e-9):.0f}x)"
    )
    refusals = ", ".join(f"{code} {n}" for code, n in sorted(result.flooder_refusals.items()))
    print(f"flooder's streams ended by the collector: {refusals or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood", description=__doc__)
    d = FloodOptions()
    parser.add_argument("--agents", type=int, default=d.agents, help="normal agents")
    parser.add_argument("--interval", type=float, default=d.interval, help="their interval, s")
    parser.add_argument("--factor", type=float, default=d.factor, help="the flooder's speed-up")
    parser.add_argument("--window", type=float, default=d.window, help="seconds per phase")
    parser.add_argument("--workdir", type=Path, help="keep state and logs here")
    args = parser.parse_args(argv)
    options = FloodOptions(
        args.agents, args.interval, args.factor, args.window, workdir=args.workdir
    )
    print_flood(run_flood(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
