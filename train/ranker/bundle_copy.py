"""A new bundle that is an existing one plus a fitted ranker (bundles are immutable)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export.bundle import MANIFEST, BundleWriter, read_manifest

# Manifest keys BundleWriter.commit writes afresh for the new bundle.
_FRESH = ("files", "version", "created_at", "format_version")


def write_with_ranker(source: str | Path, out: str | Path, ranker: dict[str, Any],
                      overwrite: bool = False, model: bytes | None = None,
                      move: bool = False, record_parent: bool = True) -> dict[str, Any]:
    """Copy `source` to `out` with manifest["ranker"] = ranker (and its ONNX model file).

    A ranker file of the source bundle is left behind, so the new bundle holds exactly the
    ranker its manifest names. With `move`, files are moved instead of copied (the source
    is a staging bundle nobody else uses and is consumed); without `record_parent` the new
    manifest names no parent version (a staging bundle was never deployed) and keeps the
    staged version.
    """
    from server.ranking.gbdt import RANKER_FILE

    source = Path(source)
    manifest = read_manifest(source, verify=True)
    transfer = shutil.move if move else None
    with BundleWriter(out, overwrite=overwrite) as writer:
        for entry in source.iterdir():
            if entry.name in (MANIFEST, RANKER_FILE):
                continue
            target = writer.path / entry.name
            if transfer:
                transfer(str(entry), str(target))
            else:
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
        if model is not None:
            (writer.path / ranker["model"]["file"]).write_bytes(model)
        fresh = {k: v for k, v in manifest.items() if k not in _FRESH}
        fresh["ranker"] = ranker
        if record_parent:
            fresh["parent_version"] = manifest.get("version")
        else:  # the staged build's version is kept (a Milvus collection is named by it)
            fresh.pop("parent_version", None)
            fresh["version"] = manifest["version"]
        return writer.commit(fresh)
