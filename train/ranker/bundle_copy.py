"""A new bundle that is an existing one plus a fitted ranker and history adapter (bundles are
immutable)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle import HISTORY_ADAPTER_FILE, MANIFEST, BundleWriter, read_manifest

# Manifest keys BundleWriter.commit writes afresh for the new bundle.
_FRESH = ("files", "version", "created_at", "format_version")


def write_with_ranker(source: str | Path, out: str | Path, ranker: dict[str, Any],
                      overwrite: bool = False, model: bytes | None = None,
                      move: bool = False, record_parent: bool = True,
                      adapter: tuple[dict[str, Any], np.ndarray | None] | None = None) -> dict[str, Any]:
    """Copy `source` to `out` with manifest["ranker"] = ranker (and its ONNX model file), and
    with `adapter` = (manifest["history_adapter"], its matrix or None) when one was fitted.

    A ranker file of the source bundle is left behind, so the new bundle holds exactly the
    ranker its manifest names; so is its adapter file when a new adapter is given. With
    `move`, files are moved instead of copied (the source is a staging bundle nobody else
    uses and is consumed); without `record_parent` the new manifest names no parent version
    (a staging bundle was never deployed) and keeps the staged version.
    """
    from server.ranking.gbdt import RANKER_FILE

    source = Path(source)
    manifest = read_manifest(source, verify=True)
    transfer = shutil.move if move else None
    replaced = {MANIFEST, RANKER_FILE} | ({HISTORY_ADAPTER_FILE} if adapter is not None else set())
    with BundleWriter(out, overwrite=overwrite) as writer:
        for entry in source.iterdir():
            if entry.name in replaced:
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
        if adapter is not None:
            section, matrix = adapter
            fresh["history_adapter"] = dict(section)
            if matrix is not None:
                np.save(writer.path / HISTORY_ADAPTER_FILE, matrix.astype(np.float32))
                fresh["history_adapter"]["file"] = HISTORY_ADAPTER_FILE
        if record_parent:
            fresh["parent_version"] = manifest.get("version")
        else:  # the staged build's version is kept (a Milvus collection is named by it)
            fresh.pop("parent_version", None)
            fresh["version"] = manifest["version"]
        return writer.commit(fresh)
