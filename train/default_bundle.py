"""The default bundle: the shipped all-MiniLM-L6-v2 at int8 over the bundled demo catalog.

Built once on first use and cached under the user's cache directory; a file lock keeps two
servers starting at once from building it twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_BUNDLE_NAME = "default-minilm-int8-demo-v1"


def cache_dir() -> Path:
    """$RECSERVE_CACHE_DIR, else $XDG_CACHE_HOME/recserve, else ~/.cache/recserve."""
    if os.environ.get("RECSERVE_CACHE_DIR"):
        return Path(os.environ["RECSERVE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recserve"


def default_bundle_path() -> Path:
    """The default bundle, built first if it is not in the cache yet."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    bundle = root / DEFAULT_BUNDLE_NAME
    with open(root / ".default-bundle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bundle / "manifest.json").is_file():
            build_default_bundle(root, bundle)
    return bundle


def build_default_bundle(root: Path, bundle: Path) -> None:
    from export.build import build_bundle
    from export.demo import demo_catalog_path, demo_interactions_path
    from export.encoder_export import export_encoder

    encoder = root / f"{DEFAULT_BUNDLE_NAME}.encoder"
    if not (encoder / "manifest.json").is_file():
        log.info("exporting the default encoder (first use) to %s", encoder)
        export_encoder("default", encoder, precision="int8")
    log.info("building the default bundle from the demo catalog to %s", bundle)
    build_bundle(encoder, demo_catalog_path(), demo_interactions_path(), bundle)
