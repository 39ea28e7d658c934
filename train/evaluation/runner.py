"""Score recommenders on the held-out cases of a split: full ranking, per group."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from train.evaluation.baselines import Recommender
from train.evaluation.metrics import summarise_groups, target_positions
from train.evaluation.protocol import EvalCases

_CHUNK = 100  # cases per progress update


@dataclass
class MethodResult:
    name: str
    metrics: dict[str, dict[str, float]]  # group -> {"cases", "recall@10", ...}
    seconds: float

    def as_dict(self) -> dict:
        return {"name": self.name, "metrics": self.metrics, "seconds": round(self.seconds, 2)}


def sample_cases(cases: EvalCases, n: int, seed: int) -> np.ndarray:
    """Indices of at most n cases, chosen with a fixed seed, in case order."""
    if n <= 0 or n >= len(cases):
        return np.arange(len(cases))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(cases), size=n, replace=False))


def _ranked(recommender: Recommender, histories: Sequence[np.ndarray], k: int,
            progress: Progress, task) -> list[np.ndarray]:
    many = getattr(recommender, "recommend_many", None)
    out: list[np.ndarray] = []
    for start in range(0, len(histories), _CHUNK):
        chunk = histories[start:start + _CHUNK]
        out.extend(many(chunk, k) if many else [recommender.recommend(h, k) for h in chunk])
        progress.update(task, advance=len(chunk))
    return out


def evaluate(recommenders: Sequence[Recommender], cases: EvalCases, chosen: np.ndarray,
             recall_ks: Sequence[int] = (10, 50), ndcg_ks: Sequence[int] = (10,),
             show_progress: bool = True) -> list[MethodResult]:
    """Each recommender ranks the catalog for every chosen case; metrics overall and per group."""
    k = max(max(recall_ks), max(ndcg_ks))
    histories = [cases.histories[i] for i in chosen]
    targets = cases.targets[chosen]
    groups = {name: mask[chosen] for name, mask in cases.groups.items()}
    results = []
    progress = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True),
                        disable=not show_progress)
    with progress:
        for recommender in recommenders:
            task = progress.add_task(recommender.name, total=len(chosen))
            started = time.perf_counter()
            ranked = _ranked(recommender, histories, k, progress, task)
            if hasattr(recommender, "close"):
                recommender.close()  # an engine's batcher and loop
            positions = target_positions(ranked, targets)
            results.append(MethodResult(recommender.name,
                                        summarise_groups(positions, groups, recall_ks, ndcg_ks),
                                        time.perf_counter() - started))
    return results
