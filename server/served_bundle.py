"""A bundle loaded for serving: encoder session, index, catalog, feature tables, user histories.

Loading verifies every checksum first (the server refuses a tampered or unknown bundle).
Everything the hot path reads is in memory; the bundle directory is never written to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle import FEATURES_DIR, INDEX_FILE, ITEMS_DB, MODEL_FILE, TOKENIZER_DIR, read_manifest
from export.errors import BundleError
from export.features import InteractionFeatures
from export.hnsw_index import load_index
from export.item_store import Catalog, ItemStore
from export.runtime import EncoderRuntime, RuntimeConfig
from export.tokenization import TextTokenizer
from server.batching.backend import EncoderBackend
from server.ranking.features import FeatureTables
from server.retrieval.backend import BackendConfig, RetrievalBackend, open_backend
from server.retrieval.filters import AttributePostings
from server.retrieval.vector_index import VectorIndex
from server.users import UserHistories

log = logging.getLogger(__name__)

# Room for live upserts before the index has to grow.
_INDEX_HEADROOM = 1.25


def encoder_max_length(manifest: dict[str, Any]) -> int:
    encoder = manifest.get("encoder") or {}
    return int((encoder.get("model") or {}).get("max_length") or encoder.get("max_length") or 256)


def attribute_codes(catalog: Catalog, vocab: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """attribute -> [n] int32 code of each item's value in the vocabulary (-1 when absent)."""
    codes = {}
    for name, values in vocab.items():
        lookup = {v: i for i, v in enumerate(values)}
        codes[name] = np.fromiter(
            (lookup.get(str(attrs.get(name)), -1) if name in attrs else -1 for attrs in catalog.attributes),
            dtype=np.int32, count=len(catalog),
        )
    return codes


@dataclass
class ServedBundle:
    path: Path
    manifest: dict[str, Any]
    backend: EncoderBackend
    catalog: Catalog
    index: RetrievalBackend  # the bundle's VectorIndex (hnsw) or a MilvusIndex
    postings: AttributePostings  # live upserts add and replace attributes
    tables: FeatureTables
    users: UserHistories
    features: InteractionFeatures

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def ranker_weights(self) -> dict[str, float] | None:
        return (self.manifest.get("ranker") or {}).get("weights")

    @classmethod
    def load(cls, path: str | Path, runtime_config: RuntimeConfig | None = None,
             backend_config: BackendConfig | None = None) -> "ServedBundle":
        path = Path(path)
        manifest = read_manifest(path, verify=True)
        for required in (MODEL_FILE, ITEMS_DB, INDEX_FILE):
            if not (path / required).exists():
                raise BundleError(f"{path} is not a complete bundle: {required} is missing")
        runtime = EncoderRuntime(path / MODEL_FILE, runtime_config or RuntimeConfig(),
                                 quantization=(manifest.get("encoder") or {}).get("quantization"))
        tokenizer = TextTokenizer(path / TOKENIZER_DIR, encoder_max_length(manifest))
        store = ItemStore.open(path / ITEMS_DB, readonly=True)
        try:
            catalog = store.catalog()
        finally:
            store.close()
        index_meta = manifest.get("index") or {}
        hnsw = load_index(
            path / INDEX_FILE, dim=runtime.dim, ef=int(index_meta.get("ef", 64)),
            max_elements=int(len(catalog) * _INDEX_HEADROOM) + 16,
        )
        index = open_backend(VectorIndex(hnsw, default_ef=int(index_meta.get("ef", 64))),
                             manifest, catalog.attributes, backend_config)
        features = InteractionFeatures.load(path / FEATURES_DIR)
        tables = FeatureTables(
            popularity=features.popularity.astype(np.float32),
            cooccurrence=features.cooccurrence.tocsr(),
            created_at=np.asarray(catalog.created_at, dtype=np.float64),
            attribute_codes=attribute_codes(catalog, features.attribute_vocab),
        )
        users = UserHistories(features.user_history, features.user_history_ts)
        log.info("loaded bundle %s: %d items, provider %s", manifest.get("version"),
                 len(catalog), runtime.provider)
        return cls(path, manifest, EncoderBackend(tokenizer, runtime), catalog, index,
                   AttributePostings(catalog.attributes), tables, users, features)
