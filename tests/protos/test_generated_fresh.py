"""The committed gRPC stubs must be exactly what ``python -m protos.generate`` produces."""

from __future__ import annotations

from pathlib import Path

from protos.generate import PROTO_DIR, ROOT, generate


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        committed = ROOT / PROTO_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run python -m protos.generate"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale: run python -m protos.generate"
        )
    committed_stubs = {path.name for path in (ROOT / PROTO_DIR).glob("*_pb2*")}
    assert committed_stubs == {path.name for path in fresh}, "stub without a .proto: remove it"
