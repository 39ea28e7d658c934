"""Evaluation results as files people read: results.json, a markdown table, a PNG bar chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from train.evaluation.runner import MethodResult

GROUPS = ("all", "warm_items", "cold_items", "new_users")
COLUMNS = ("recall@10", "recall@50", "ndcg@10")


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"  # NaN: a group with no cases


def markdown_table(results: Sequence[MethodResult]) -> str:
    """Overall metrics, then Recall@50 per group, one row per method."""
    first = results[0].metrics
    head = ["method", *COLUMNS] + [f"R@50 {g} (n={first[g]['cases']})" for g in GROUPS[1:]
                                   if g in first]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for result in results:
        m = result.metrics
        cells = [result.name, *(_fmt(m["all"][c]) for c in COLUMNS)]
        cells += [_fmt(m[g]["recall@50"]) for g in GROUPS[1:] if g in m]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(results: Sequence[MethodResult], path: Path, title: str) -> None:
    """Left: overall Recall@10 / Recall@50 / NDCG@10; right: Recall@50 per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r.name for r in results]
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(names) + 2.0), sharey=True)
    for ax, keys, getter, label in (
        (axes[0], COLUMNS, lambda r, c: r.metrics["all"][c], "all cases"),
        (axes[1], GROUPS, lambda r, g: r.metrics[g]["recall@50"], "Recall@50 by group"),
    ):
        height = 0.8 / len(keys)
        for j, key in enumerate(keys):
            values = [np.nan_to_num(getter(r, key)) for r in results]
            ax.barh(y + (j - (len(keys) - 1) / 2) * height, values, height, label=key)
        ax.set_title(label)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: Sequence[MethodResult], out: Path, setup: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(
        {"setup": setup, "results": [r.as_dict() for r in results]}, indent=2) + "\n")
    text = markdown_table(results)
    if setup.get("candidate_recall"):
        from train.evaluation.sources import recall_table

        text += ("\nNext item among the candidates (share of cases; mean list size in "
                 "brackets):\n\n" + recall_table(setup["candidate_recall"]))
    paths["markdown"].write_text(text)
    bar_chart(results, paths["png"],
              f"{setup.get('protocol')} - {setup.get('cases_evaluated')} cases, full ranking")
    return paths
