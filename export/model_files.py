"""The encoder's files: model.onnx and, beside it, its weights as ONNX external data.

Weights in their own file (MODEL_DATA_FILE) that ONNX Runtime's CPU provider uses as they
are (for MiniLM int8 the 47 MB fp32 embedding table; the int8 matrices it repacks) are
memory-mapped instead of copied into every session: all processes serving a bundle share
one copy in the page cache, and only the pages a run touches are resident. Measured on
MiniLM int8: 46.9 MB mapped, 2.1 MB of it resident in a warmed server; private memory per
worker 317 -> 265 MB (docs/BENCHMARKS.md, issue 13). Any
ONNX Runtime user still loads model.onnx alone: the data file is found beside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from export.bundle import MODEL_FILE, sha256_file

MODEL_DATA_FILE = MODEL_FILE + ".data"
EXTERNAL_MIN_BYTES = 1024  # onnx's own default: every weight tensor; small constants stay inline


def externalize_weights(model_path: Path) -> None:
    """Rewrite model_path with its initializers in MODEL_DATA_FILE beside it."""
    import onnx

    model = onnx.load(str(model_path))
    data = model_path.parent / MODEL_DATA_FILE
    data.unlink(missing_ok=True)
    onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=MODEL_DATA_FILE, size_threshold=EXTERNAL_MIN_BYTES)
    os.chmod(data, 0o644)  # onnx writes it owner-only; a bundle is read by whoever serves it


def copy_model(source_dir: Path, destination_dir: Path) -> None:
    """model.onnx and its data file, when it has one."""
    for name in (MODEL_FILE, MODEL_DATA_FILE):
        if (source_dir / name).is_file():
            shutil.copy2(source_dir / name, destination_dir / name)


def model_sha256(root: Path) -> str:
    """Digest of the encoder's files: model.onnx's sha256 alone when its weights are inside it
    (so older encoders keep theirs), else of both files' digests."""
    digest = sha256_file(root / MODEL_FILE)
    if not (root / MODEL_DATA_FILE).is_file():
        return digest
    return hashlib.sha256(f"{digest} {sha256_file(root / MODEL_DATA_FILE)}".encode()).hexdigest()
