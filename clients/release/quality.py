"""Retrieval quality of a bundle on the held-out probe, and the candidate-vs-current verdict.

What is measured is what a release changes: the encoder's item vectors and the HNSW index.
For each probe case the history items' vectors (from the bundle's own index) are averaged
with a recency decay into one query vector; the index returns its nearest items, the history
items are dropped, and the case is a hit when the held-out target is among the first k.
recall@k is hits / cases. Nothing here reads the bundle's interaction features, so it does not
matter that the bundle was built from the same log the probe comes from.

A case whose target is not in a bundle's catalog, or none of whose history is, is a miss for
that bundle: an older catalog that lacks new items is worse at recommending them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clients.release.probe import HeldOutProbe

DEFAULT_K = 10
DEFAULT_MAX_REGRESSION = 0.02
HISTORY_HALF_LIFE_EVENTS = 10.0  # as the server's RankingConfig default


@dataclass(frozen=True)
class RetrievalQuality:
    k: int
    cases: int
    hits: int
    target_missing: int
    """Cases whose target item is not in this bundle."""
    history_missing: int
    """Cases none of whose history items is in this bundle."""

    @property
    def recall(self) -> float:
        return self.hits / self.cases if self.cases else 0.0

    def to_record(self) -> dict:
        return {**asdict(self), f"recall_at_{self.k}": round(self.recall, 4)}


def _query_vector(vectors: np.ndarray) -> np.ndarray:
    """Recency-weighted mean of history vectors (oldest first), L2-normalised."""
    ages = np.arange(len(vectors) - 1, -1, -1, dtype=np.float64)
    weights = 0.5 ** (ages / HISTORY_HALF_LIFE_EVENTS)
    query = (weights[:, None] * vectors).sum(axis=0)
    return (query / max(np.linalg.norm(query), 1e-12)).astype(np.float32)


def measure_bundle(bundle_dir: str | Path, probe: HeldOutProbe, k: int = DEFAULT_K) -> RetrievalQuality:
    """recall@k of the bundle at bundle_dir on the probe (checksums verified first)."""
    from export.bundle import INDEX_FILE, ITEMS_DB, read_manifest
    from export.hnsw_index import load_index
    from export.item_store import ItemStore

    root = Path(bundle_dir)
    manifest = read_manifest(root, verify=True)
    with ItemStore.open(root / ITEMS_DB, readonly=True) as store:
        label_of = store.catalog().label_of
    index_meta = manifest.get("index") or {}
    index = load_index(root / INDEX_FILE, dim=int(index_meta["dim"]), ef=int(index_meta.get("ef", 64)))
    stored = index.get_current_count()

    queries, histories, targets = [], [], []
    target_missing = history_missing = 0
    for case in probe.cases:
        history = [label_of[i] for i in case.history if i in label_of]
        if case.target not in label_of:
            target_missing += 1
        elif not history:
            history_missing += 1
        else:
            vectors = np.asarray(index.get_items(history), dtype=np.float32)
            queries.append(_query_vector(vectors))
            histories.append(set(history))
            targets.append(label_of[case.target])
    hits = 0
    if queries:
        wanted = min(stored, k + max(len(h) for h in histories))
        index.set_ef(max(int(index_meta.get("ef", 64)), wanted))
        found, _ = index.knn_query(np.stack(queries), k=wanted)
        for row, seen, target in zip(found, histories, targets):
            ranked = [int(label) for label in row if int(label) not in seen][:k]
            hits += target in ranked
    return RetrievalQuality(k, len(probe.cases), hits, target_missing, history_missing)


@dataclass(frozen=True)
class QualityVerdict:
    """Candidate against the published `current` (None when there is nothing to compare with)."""

    candidate: RetrievalQuality
    current: RetrievalQuality | None
    current_release: str | None
    max_regression: float
    probe: dict

    @property
    def regression(self) -> float:
        """How much lower the candidate's recall is (negative: it is better)."""
        return 0.0 if self.current is None else self.current.recall - self.candidate.recall

    @property
    def worse(self) -> bool:
        return self.regression > self.max_regression

    def summary(self) -> str:
        k = self.candidate.k
        line = f"recall@{k} on {self.candidate.cases} held-out users: candidate {self.candidate.recall:.4f}"
        if self.current is None:
            return line + " (no published release to compare with)"
        return (f"{line}, {self.current_release} {self.current.recall:.4f} "
                f"(change {self.candidate.recall - self.current.recall:+.4f}, "
                f"allowed drop {self.max_regression:.4f})")

    def to_record(self) -> dict:
        return {
            "probe": self.probe, "max_regression": self.max_regression,
            "candidate": self.candidate.to_record(),
            "current": self.current.to_record() if self.current else None,
            "current_release": self.current_release, "regression": round(self.regression, 4),
            "worse": self.worse,
        }

    def __str__(self) -> str:
        return json.dumps(self.to_record())
