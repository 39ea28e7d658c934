"""Per-epoch validation on later-in-time pairs: contrastive loss and next-item retrieval.

Retrieval is full ranking against the whole catalog (no sampled negatives), leaving out
the items of the query's history window. Two ways to build the user's query vector:

- `text`: the encoder applied to the history text, the way the model is trained;
- `items`: the recency-weighted mean of the history items' own vectors, normalised - a
  single-interest approximation of how the server represents a user (it clusters the
  same item vectors, with the same 10-event half-life). This is the figure that says
  whether fine-tuning helps the served recommendations.

The loss is the training loss (MultipleNegativesRankingLoss) over fixed batches of the
validation pairs, computed from the same vectors, so epochs compare like for like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from train.batches import distinct_target_batches
from train.encoding import encode_texts
from train.pairs import Pair, query_text


@dataclass
class ValidationResult:
    pairs: int                   # history pairs (the figures below but *_queries)
    k: int
    loss: float                  # over history and query pairs together
    recall_text: float
    ndcg_text: float
    recall_items: float
    ndcg_items: float
    query_pairs: int = 0         # natural-language query pairs, where the data has them
    recall_queries: float | None = None
    ndcg_queries: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def target_ranks(queries: np.ndarray, items: np.ndarray, pairs: Sequence[Pair]) -> np.ndarray:
    """0-based rank of each pair's target among all items, its history window left out."""
    ranks = np.empty(len(pairs), dtype=np.int64)
    for begin in range(0, len(pairs), 256):
        scores = queries[begin: begin + 256] @ items.T
        for row, pair in enumerate(pairs[begin: begin + 256]):
            target_score = scores[row, pair.target]
            scores[row, list(pair.window)] = -np.inf
            ranks[begin + row] = int((scores[row] > target_score).sum())
    return ranks


def recall_and_ndcg(ranks: np.ndarray, k: int) -> tuple[float, float]:
    """Recall@k and NDCG@k of one relevant item per query, from its rank."""
    if len(ranks) == 0:
        return 0.0, 0.0
    hit = ranks < k
    return float(hit.mean()), float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def history_vectors(pairs: Sequence[Pair], items: np.ndarray, half_life_events: float) -> np.ndarray:
    """Per pair, the recency-weighted (newest weighs 1, halving every half-life) mean of
    its history items' vectors, L2-normalised."""
    out = np.zeros((len(pairs), items.shape[1]), np.float32)
    for row, pair in enumerate(pairs):
        labels = np.asarray(pair.history, dtype=np.int64)
        weights = np.power(0.5, np.arange(len(labels)) / max(half_life_events, 1e-6))
        out[row] = weights @ items[labels]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def validation_loss(loss_fn, queries: np.ndarray, items: np.ndarray, pairs: Sequence[Pair],
                    batch_size: int) -> float:
    """Mean loss over fixed, distinct-target batches of the validation pairs."""
    import torch

    position = {id(p): i for i, p in enumerate(pairs)}
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in distinct_target_batches(pairs, batch_size):
            rows = [position[id(p)] for p in batch]
            q = torch.from_numpy(queries[rows])
            d = torch.from_numpy(items[[p.target for p in batch]])
            total += float(loss_fn.compute_loss_from_embeddings([q, d], None)) * len(batch)
            count += len(batch)
    return total / max(count, 1)


def validate(model, loss_fn, pairs: Sequence[Pair], item_texts: Sequence[str], *, k: int,
             batch_size: int, half_life_events: float, progress=None
             ) -> tuple[ValidationResult, np.ndarray]:
    """Validation figures, and the catalog's vectors under the current model (the hard
    negative miner reuses them)."""
    items = encode_texts(model, item_texts, batch_size=batch_size * 2, progress=progress,
                         description="validation: catalog")
    queries = encode_texts(model, [query_text(p, item_texts) for p in pairs],
                           batch_size=batch_size * 2, progress=progress,
                           description="validation: queries")
    is_history = np.asarray([p.text is None for p in pairs], dtype=bool)
    history = [p for p in pairs if p.text is None]
    searches = [p for p in pairs if p.text is not None]
    recall_text, ndcg_text = recall_and_ndcg(target_ranks(queries[is_history], items, history), k)
    centroids = history_vectors(history, items, half_life_events)
    recall_items, ndcg_items = recall_and_ndcg(target_ranks(centroids, items, history), k)
    result = ValidationResult(
        pairs=len(history), k=k, loss=validation_loss(loss_fn, queries, items, pairs, batch_size),
        recall_text=recall_text, ndcg_text=ndcg_text,
        recall_items=recall_items, ndcg_items=ndcg_items, query_pairs=len(searches),
    )
    if searches:
        result.recall_queries, result.ndcg_queries = recall_and_ndcg(
            target_ranks(queries[~is_history], items, searches), k)
    return result, items
