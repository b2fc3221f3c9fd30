"""Regenerate the Python stubs for ``protos/posture/v1/*.proto``: ``python -m protos.generate``.

The stubs are committed beside the ``.proto`` files and imported as ``protos.posture.v1``;
``tests/protos/test_generated_fresh.py`` fails when they no longer match this output.
Compiling from the repository root with ``-I .`` makes the proto path the import path, so
the generated code needs no hand edits.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("protos/posture/v1")


def generate(out_dir: Path = ROOT) -> list[Path]:
    """Compile every proto into ``out_dir`` (the repository root by default)."""
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(str(path.relative_to(ROOT)) for path in (ROOT / PROTO_DIR).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(ROOT / proto) for proto in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {protos}")
    return sorted((out_dir / PROTO_DIR).glob("*_pb2*"))


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    sys.exit(0)
