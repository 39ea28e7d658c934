"""The default bundle: the shipped all-MiniLM-L6-v2 at int8 over the bundled demo catalog,
with the learned ranker fitted on the demo interactions (what `recserve build` does with
interactions), so `recserve serve` with no bundle serves the way a default build does.

It lives in train/ because fitting the ranker is training (server/ must not import train/).
Built once on first use and cached under the user's cache directory; a file lock keeps two
servers starting at once from building it twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_BUNDLE_NAME = "default-minilm-int8-demo-v7"  # v7: history adapter; v6: features v5 (bridge_likeness); v5: 31-leaf trees
ENCODER_NAME = "default-minilm-int8-demo-v1.encoder"  # unchanged since v1: caches keep it


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
    from export.catalog import InteractionColumns
    from export.demo import demo_catalog_path, demo_interactions_path
    from export.encoder_export import export_encoder
    from train.build_with_ranker import build_ranked
    from train.ranker.pipeline import RankerFitConfig

    encoder = root / ENCODER_NAME
    if not (encoder / "manifest.json").is_file():
        log.info("exporting the default encoder (first use) to %s", encoder)
        export_encoder("default", encoder, precision="int8")
    log.info("building the default bundle from the demo catalog to %s", bundle)
    interactions = demo_interactions_path()
    section, _ = build_ranked(
        lambda staging: build_bundle(encoder, demo_catalog_path(), interactions, staging),
        bundle, interactions, InteractionColumns(), RankerFitConfig())
    log.info("default bundle ranker: %s", "trees" if section.get("model") else "linear")
