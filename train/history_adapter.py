"""A linear map of history interests toward the items bought next, learned from interactions.

The content source asks the item index with each history interest (a cluster of the
history's item vectors, server/retrieval/interests.py). The stock encoder places an item
near items that *read* alike; what a customer buys next is often something else (a lantern
after fairy lights). Fine-tuning the encoder teaches it that, but costs 25-50 minutes of a
core (docs/TRAINING.md). This fits one d x d matrix A instead, in seconds: the served query
becomes normalize(interest @ A), the item vectors and the index stay as they are (text
queries and live upserts are untouched). Because A is a map of the content space, it also
moves queries toward items nobody has bought yet: cold items are found by what their text
says people buy next, not only by what it says.

Training examples are every (history -> next item) step of the users' sequences before
`end`: the recency-weighted mean of the previous items (the served half-life) as the query,
the next item as the target. The loss is a sampled softmax over the other targets of the
batch with the logQ correction (Yi et al., RecSys 2019: in-batch negatives over-sample
popular items; popularity is the ranker's feature, and cold items have none), a learned
temperature, and a ridge toward the identity (the stock encoder is the prior). Epochs stop
on a seeded 10 % of the examples held out; the map is kept only if it beats the identity on
them, so a data set where it does not help keeps the stock behaviour.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from server.retrieval.interests import recency_weights
from train.data import EventSequences


@dataclass(frozen=True)
class AdapterFitConfig:
    max_history: int = 10
    """Previous items averaged into a training query (the served interest clusters hold
    about this many: history_half_life_events)."""
    half_life_events: float = 10.0
    """Recency half-life of the query's mean, the served one (engine RankingConfig)."""
    max_examples: int = 100_000
    """Most (history -> next) examples, sampled with the seed: the fit's cost bound."""
    batch: int = 1024
    max_epochs: int = 30
    patience: int = 3
    learning_rate: float = 1e-3
    ridge: float = 1e-3
    """Strength of the pull toward the identity (sum of squares of A - I)."""
    held_out: float = 0.1
    seed: int = 0


@dataclass
class FittedAdapter:
    matrix: np.ndarray | None  # [d, d] float32, None when it did not beat the identity
    info: dict = field(default_factory=dict)


def history_examples(vectors: np.ndarray, events: EventSequences, end: float,
                     config: AdapterFitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(queries [m, d], next-item labels [m]) of every step before `end` (module docstring)."""
    queries, targets = [], []
    for u in range(len(events.user_ids)):
        labels, stamps = events.user_events(u)
        labels = labels[stamps < end]
        for i in range(1, len(labels)):
            history = labels[max(0, i - config.max_history):i]
            queries.append(recency_weights(len(history), config.half_life_events) @ vectors[history])
            targets.append(labels[i])
    if not targets:
        return np.zeros((0, vectors.shape[1]), np.float32), np.zeros(0, np.int64)
    q = np.asarray(queries, dtype=np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q, np.asarray(targets, dtype=np.int64)


def fit_history_adapter(vectors: np.ndarray, events: EventSequences, end: float = math.inf,
                        config: AdapterFitConfig | None = None) -> FittedAdapter:
    """The map for these item vectors ([n, d], L2-normalised) from the steps before `end`."""
    import torch

    config = config or AdapterFitConfig()
    started = time.perf_counter()
    queries, targets = history_examples(vectors, events, end, config)
    rng = np.random.default_rng(config.seed)
    if len(targets) > config.max_examples:
        keep = rng.choice(len(targets), config.max_examples, replace=False)
        queries, targets = queries[keep], targets[keep]
    held = max(1, int(round(config.held_out * len(targets))))
    if len(targets) - held < config.batch // 4:
        return FittedAdapter(None, {"kept": False, "examples": int(len(targets)),
                                    "reason": "too few (history -> next) examples"})
    order = rng.permutation(len(targets))
    fit_rows, held_rows = order[held:], order[:held]
    torch.manual_seed(config.seed)
    n, d = vectors.shape
    items = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    q_all = torch.from_numpy(queries)
    counts = np.bincount(targets[fit_rows], minlength=n).astype(np.float64) + 1.0
    log_q = torch.from_numpy(np.log(counts / counts.sum()).astype(np.float32))
    identity = torch.eye(d)
    matrix = torch.nn.Parameter(identity.clone())
    log_temperature = torch.nn.Parameter(torch.tensor(math.log(0.05)))
    optimizer = torch.optim.Adam([matrix, log_temperature], lr=config.learning_rate)

    def batch_loss(rows: np.ndarray, a: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(q_all[rows] @ a, dim=1)
        wanted, position = np.unique(targets[rows], return_inverse=True)
        wanted_t = torch.from_numpy(wanted)
        logits = q @ items[wanted_t].T / log_t.exp() - log_q[wanted_t]
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(position))

    def held_loss(a: torch.Tensor, log_t: torch.Tensor) -> float:
        with torch.no_grad():
            parts = [(batch_loss(held_rows[s:s + config.batch], a, log_t).item(),
                      len(held_rows[s:s + config.batch]))
                     for s in range(0, len(held_rows), config.batch)]
        return sum(loss * m for loss, m in parts) / sum(m for _, m in parts)

    baseline = held_loss(identity, log_temperature.detach())  # at the initial temperature
    best, best_matrix, best_log_t, stale, epochs = math.inf, None, log_temperature.detach().clone(), 0, 0
    for epoch in range(config.max_epochs):
        epochs = epoch + 1
        shuffled = fit_rows[rng.permutation(len(fit_rows))]
        for s in range(0, len(shuffled), config.batch):
            loss = (batch_loss(shuffled[s:s + config.batch], matrix, log_temperature)
                    + config.ridge * ((matrix - identity) ** 2).sum())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        current = held_loss(matrix.detach(), log_temperature.detach())
        if current < best - 1e-4:
            best, best_matrix, stale = current, matrix.detach().clone(), 0
            best_log_t = log_temperature.detach().clone()
        else:
            stale += 1
            if stale >= config.patience:
                break
    # the identity at the kept epoch's learned temperature: the fair "no map" figure to beat
    identity_loss = held_loss(identity, best_log_t)
    kept = best_matrix is not None and best < identity_loss
    info = {"kept": bool(kept), "examples": int(len(targets)), "held_out": int(held),
            "epochs": epochs, "held_out_loss": round(best, 5),
            "identity_held_out_loss": round(identity_loss, 5),
            "initial_held_out_loss": round(baseline, 5),
            "temperature": round(float(best_log_t.exp()), 5),
            "seconds": round(time.perf_counter() - started, 2),
            "config": config.__dict__.copy()}
    return FittedAdapter(best_matrix.numpy().astype(np.float32) if kept else None, info)
