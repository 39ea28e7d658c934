"""A new bundle that is an existing one plus learned ranker weights (bundles are immutable)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export.bundle import MANIFEST, BundleWriter, read_manifest

# Manifest keys BundleWriter.commit writes afresh for the new bundle.
_FRESH = ("files", "version", "created_at", "format_version")


def write_with_ranker(source: str | Path, out: str | Path, ranker: dict[str, Any],
                      overwrite: bool = False) -> dict[str, Any]:
    """Copy `source` to `out` with manifest["ranker"] = ranker; returns the new manifest."""
    source = Path(source)
    manifest = read_manifest(source, verify=True)
    with BundleWriter(out, overwrite=overwrite) as writer:
        for entry in source.iterdir():
            if entry.name == MANIFEST:
                continue
            target = writer.path / entry.name
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
        fresh = {k: v for k, v in manifest.items() if k not in _FRESH}
        fresh["ranker"] = ranker
        fresh["parent_version"] = manifest.get("version")
        return writer.commit(fresh)
