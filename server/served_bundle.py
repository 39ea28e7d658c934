"""A bundle loaded for serving: encoder session, index, catalog, feature tables, user histories.

Loading verifies every checksum first (the server refuses a tampered or unknown bundle),
then reads the typed manifest (export.bundle.Manifest) for everything it needs. Everything
the hot path reads is in memory; the bundle directory is never written to. What live writes
change (catalog, index, postings, feature tables, user histories) is the bundle's one
`LiveOverlay` (server/live/overlay.py); the rest is never changed after loading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from export.bundle import (FEATURES_DIR, INDEX_FILE, ITEMS_DB, MODEL_FILE, TOKENIZER_DIR, Manifest,
                           load_manifest)
from export.errors import BundleError
from export.features import InteractionFeatures
from export.hnsw_index import load_index
from export.item_store import ItemStore
from export.runtime import EncoderRuntime, RuntimeConfig
from export.tokenization import TextTokenizer
from server.batching.backend import EncoderBackend
from server.live.overlay import LiveOverlay, ServedCatalog
from server.ranking.features import FEATURES, FeatureTables
from server.ranking.scorer import Ranker
from server.retrieval.backend import BackendConfig, RetrievalBackend, open_backend
from server.retrieval.filters import AttributePostings
from server.retrieval.sources.cold_bridge import ColdBridge
from server.retrieval.vector_index import VectorIndex
from server.users import UserHistories

log = logging.getLogger(__name__)

# Room for live upserts before an index has to grow (the served one, snapshots, compactions).
INDEX_HEADROOM = 1.25


def encoder_max_length(manifest: Manifest | dict) -> int:
    """The token limit the encoder was exported (and items embedded) with."""
    typed = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)
    return typed.encoder.model.max_length


def value_codes(vocab: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """attribute -> value -> its code (its position in the bundle's vocabulary)."""
    return {name: {v: i for i, v in enumerate(values)} for name, values in vocab.items()}


def attribute_codes(attributes: Sequence[dict[str, str]], vocab: dict[str, list[str]]
                    ) -> dict[str, np.ndarray]:
    """attribute -> [n] int32 code of each item's value in the vocabulary (-1 when absent)."""
    codes = {}
    for name, lookup in value_codes(vocab).items():
        codes[name] = np.fromiter(
            (lookup.get(str(attrs.get(name)), -1) if name in attrs else -1 for attrs in attributes),
            dtype=np.int32, count=len(attributes),
        )
    return codes


def feature_tables(features: InteractionFeatures, attributes: Sequence[dict[str, str]],
                   created_at: np.ndarray, index: RetrievalBackend,
                   freshness_half_life_days: float = 30.0) -> FeatureTables:
    """The served (mutable) tables over a bundle's interaction features (and the cold-item
    bridge derived from them and the index); `created_at` is each item's creation time."""
    return FeatureTables(
        popularity=features.popularity.astype(np.float32),
        cooccurrence=features.cooccurrence.tocsr(),
        created_at=np.array(created_at, dtype=np.float64),
        attribute_codes=attribute_codes(attributes, features.attribute_vocab),
        freshness_half_life_days=freshness_half_life_days,
        trending=features.trending.astype(np.float32),
        repeat_rate=features.repeat_rate.astype(np.float32),
        item_knn=features.item_knn,
        transitions=features.transitions,
        cold_bridge=ColdBridge.derive(features.item_knn, index),
    )


def open_runtime(model_path: Path, config: RuntimeConfig, quantization: dict | None):
    """A session of this process, or the shared inference process's (config.inference_socket)."""
    if config.inference_socket:
        from server.inference.client import RemoteEncoderRuntime

        return RemoteEncoderRuntime(config.inference_socket, model_path, quantization)
    return EncoderRuntime(model_path, config, quantization=quantization)


def learned_ranker(path: Path, manifest: Manifest) -> Ranker | None:
    """The bundle's exported ranker model (checksum checked), or None: the linear fallback."""
    if manifest.ranker is None or not manifest.ranker.model:
        return None
    from server.ranking.gbdt import GBDTRanker

    return GBDTRanker.load(path, manifest.ranker.model, FEATURES)


def history_adapter(path: Path, manifest: Manifest, dim: int) -> np.ndarray | None:
    """The bundle's learned map of history interests ([dim, dim]), or None: interests as is."""
    section = manifest.history_adapter
    if section is None or not section.file:
        return None
    matrix = np.load(path / section.file, allow_pickle=False)
    if matrix.shape != (dim, dim) or not np.isfinite(matrix).all():
        raise BundleError(f"{section.file}: expected a finite [{dim}, {dim}] matrix, "
                          f"found shape {matrix.shape}")
    return np.ascontiguousarray(matrix, dtype=np.float32)


@dataclass
class ServedBundle:
    path: Path
    manifest: Manifest
    backend: EncoderBackend
    overlay: LiveOverlay  # everything live writes change (the log applier's alone to change)
    ranker: Ranker | None = None  # the exported model; None = the linear scorer
    history_adapter: np.ndarray | None = None  # [d, d]: history interests -> item space

    @property
    def version(self) -> str:
        return self.manifest.version

    # what requests read, all of it the overlay's
    @property
    def catalog(self) -> ServedCatalog:
        return self.overlay.catalog

    @property
    def index(self) -> RetrievalBackend:
        """The bundle's VectorIndex (hnsw) or a MilvusIndex."""
        return self.overlay.index

    @property
    def postings(self) -> AttributePostings:
        return self.overlay.postings

    @property
    def tables(self) -> FeatureTables:
        return self.overlay.tables

    @property
    def users(self) -> UserHistories:
        return self.overlay.users

    @property
    def ranker_weights(self) -> dict[str, float] | None:
        return self.manifest.ranker.weights if self.manifest.ranker else None

    @classmethod
    def load(cls, path: str | Path, runtime_config: RuntimeConfig | None = None,
             backend_config: BackendConfig | None = None) -> "ServedBundle":
        path = Path(path)
        manifest = load_manifest(path, verify=True)
        for required in (MODEL_FILE, ITEMS_DB, INDEX_FILE):
            if not (path / required).exists():
                raise BundleError(f"{path} is not a complete bundle: {required} is missing")
        runtime = open_runtime(path / MODEL_FILE, runtime_config or RuntimeConfig(),
                               manifest.encoder.quantization)
        tokenizer = TextTokenizer(path / TOKENIZER_DIR, encoder_max_length(manifest))
        store = ItemStore.open(path / ITEMS_DB, readonly=True)
        try:
            catalog = store.catalog()
        finally:
            store.close()
        ef = manifest.index.ef
        hnsw = load_index(path / INDEX_FILE, dim=runtime.dim, ef=ef,
                          max_elements=int(len(catalog) * INDEX_HEADROOM) + 16)
        index = open_backend(VectorIndex(hnsw, default_ef=ef),
                             manifest, catalog.attributes, backend_config)
        features = InteractionFeatures.load(path / FEATURES_DIR)
        users = UserHistories(features.user_history, features.user_history_ts,
                              history_length=manifest.features.parameters.history_length)
        overlay = LiveOverlay(
            ServedCatalog(catalog.item_ids, catalog.titles, catalog.attributes, catalog.label_of),
            index, AttributePostings(catalog.attributes),
            feature_tables(features, catalog.attributes, catalog.created_at, index), users,
            value_codes(features.attribute_vocab))
        log.info("loaded bundle %s: %d items, provider %s", manifest.version,
                 len(catalog), runtime.provider)
        return cls(path, manifest, EncoderBackend(tokenizer, runtime), overlay,
                   learned_ranker(path, manifest), history_adapter(path, manifest, runtime.dim))
