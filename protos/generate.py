"""Regenerate the Python stubs from recommender.proto: `python -m protos.generate`.

The stubs are committed; tests/protos/test_stubs_fresh.py fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = "protos/recommender.proto"
OUTPUTS = ("recommender_pb2.py", "recommender_pb2.pyi", "recommender_pb2_grpc.py")


def generate(out_root: Path) -> None:
    """Write the stubs under out_root/protos/ (the repository root for the real thing)."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    repo_root = Path(__file__).resolve().parent.parent
    (out_root / "protos").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{repo_root}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(repo_root / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
