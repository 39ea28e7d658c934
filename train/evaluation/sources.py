"""Candidate sources measured one by one: is the next item among each source's candidates?

`candidate_recall` runs the engine's own `candidates()` step (every source, merged with
provenance, filters applied) for each case and counts how often the held-out item is
among the candidates: per source (it was in that source's list) and for the union (any
source found it), overall and per group (warm/cold items, new users), with the mean list
sizes. That is the ceiling of any ranker over those candidates.

`source_alone_engine` is an engine whose candidates all come from one source (it gets the
whole candidate budget) ranked by that source's own order: the "each source alone" rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from server.engine import RecommendationEngine
from server.ranking.features import FEATURE_NAMES
from server.ranking.scorer import LinearScorer, weight_vector
from server.requests import RecommendQuery
from server.retrieval.sources.base import SOURCE_NAMES
from train.evaluation.protocol import EvalCases


def source_alone_engine(engine: RecommendationEngine, source: str) -> RecommendationEngine:
    """`engine` with only `source` active, its candidates ordered by the source's own rank."""
    if source not in SOURCE_NAMES:
        raise ValueError(f"unknown source {source!r}; sources: {SOURCE_NAMES}")
    engine.sources = [s for s in engine.sources if s.name == source]
    engine.shares = {name: (1.0 if name == source else 0.0) for name in engine.shares}
    # 1 / (1 + rank) in the source's list: the source's own order, nothing else.
    only_rank = {name: (1.0 if name == f"rank_{source}" else 0.0) for name in FEATURE_NAMES}
    engine.linear = LinearScorer(weight_vector(only_rank))
    engine.ranker = engine.linear
    return engine


def candidate_recall(engine: RecommendationEngine, cases: EvalCases, chosen: np.ndarray,
                     k: int, on_case=None) -> dict[str, dict[str, float]]:
    """{group: {"cases", "union", <source>..., "mean_candidates", "mean_<source>"}}."""
    ids = engine.bundle.catalog.item_ids
    history_length = engine.bundle.users.history_length
    hits = np.zeros((len(chosen), len(SOURCE_NAMES) + 1), dtype=bool)  # last column: union
    sizes = np.zeros((len(chosen), len(SOURCE_NAMES) + 1), dtype=np.int64)
    for row, case in enumerate(chosen):
        history = cases.histories[case][-history_length:]
        request = RecommendQuery(history=tuple(ids[int(i)] for i in history), k=k)
        found = engine.candidates(request)
        merged = found.merged
        found_by = merged.ranks >= 0  # [C, sources]
        is_target = merged.labels == cases.targets[case]
        hits[row, :-1] = (found_by & is_target[:, None]).any(axis=0)
        hits[row, -1] = is_target.any()
        sizes[row, :-1] = found_by.sum(axis=0)
        sizes[row, -1] = len(merged.labels)
        if on_case:
            on_case()
    groups = {"all": np.ones(len(chosen), bool)}
    groups.update({name: mask[chosen] for name, mask in cases.groups.items()})
    return {name: _summary(hits[mask], sizes[mask]) for name, mask in groups.items()}


def _summary(hits: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"cases": int(len(hits))}
    if len(hits) == 0:
        return out
    names: Sequence[str] = (*SOURCE_NAMES, "union")
    out.update({name: round(float(hits[:, j].mean()), 5) for j, name in enumerate(names)})
    out.update({f"mean_{name}": round(float(sizes[:, j].mean()), 1)
                for j, name in enumerate(names[:-1])})
    out["mean_candidates"] = round(float(sizes[:, -1].mean()), 1)
    return out


def recall_table(recall: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per bundle, the share of cases with the next item among candidates."""
    names = (*SOURCE_NAMES, "union")
    head = ["bundle", "cases", *names, "mean candidates", "union (cold items)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for bundle, groups in recall.items():
        overall, cold = groups["all"], groups.get("cold_items", {})
        cells = [bundle, str(overall["cases"])]
        cells += [f"{overall.get(n, float('nan')):.3f} ({overall.get(f'mean_{n}', 0):.0f})"
                  if n != "union" else f"{overall.get(n, float('nan')):.3f}" for n in names]
        cells += [f"{overall.get('mean_candidates', 0):.0f}",
                  f"{cold['union']:.3f}" if cold.get("cases") else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
