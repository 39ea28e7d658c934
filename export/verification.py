"""The verification gate: an exported encoder must agree with the PyTorch fp32 model.

On the probe set (export/probes.py) both produce vectors; the gate compares, per probe,
the cosine between the two vectors (mean and 1st percentile), the largest absolute
difference of any component, and retrieval agreement: each probe queries the rest, and
overlap@10 is the share of the reference's 10 nearest neighbours the export also returns.
Short product names have many near-ties, so overlap is the hardest of the three for int8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from export.errors import VerificationFailed
from export.settings import RecserveSettings, settings_config

METRICS = ("mean_cosine", "p1_cosine", "max_abs_diff", "overlap_at_10")
EXIT_GATE_FAILED = 3


class GateFailed(VerificationFailed):
    """The export disagrees with fp32 beyond the gate; exit status 3 (2 is bad input)."""

    exit_code = EXIT_GATE_FAILED


class VerificationGate(RecserveSettings):
    """Minimum agreement with the PyTorch fp32 model, per precision (0 = not gated)."""

    model_config = settings_config("verification")

    fp32_min_mean_cosine: float = 0.99999
    """fp32 export: lowest acceptable mean cosine to the PyTorch vectors."""
    fp32_min_p1_cosine: float = 0.0
    """fp32 export: lowest acceptable 1st-percentile cosine (0 = reported, not gated)."""
    fp32_min_overlap_at_10: float = 0.0
    """fp32 export: lowest acceptable mean top-10 retrieval overlap (0 = not gated)."""
    int8_min_mean_cosine: float = 0.99
    """int8 export: lowest acceptable mean cosine to the PyTorch vectors."""
    int8_min_p1_cosine: float = 0.97
    """int8 export: lowest acceptable 1st-percentile cosine."""
    int8_min_overlap_at_10: float = 0.85
    """int8 export: lowest acceptable mean top-10 retrieval overlap."""
    fp16_min_mean_cosine: float = 0.9995
    """fp16 export: lowest acceptable mean cosine to the PyTorch vectors."""
    fp16_min_p1_cosine: float = 0.0
    """fp16 export: lowest acceptable 1st-percentile cosine (0 = not gated)."""
    fp16_min_overlap_at_10: float = 0.0
    """fp16 export: lowest acceptable mean top-10 retrieval overlap (0 = not gated)."""

    def minimums(self, precision: str) -> dict[str, float]:
        """{metric: minimum} for the gated metrics of one precision."""
        values = {
            metric: getattr(self, f"{precision}_min_{metric}")
            for metric in ("mean_cosine", "p1_cosine", "overlap_at_10")
        }
        return {metric: value for metric, value in values.items() if value > 0}


@dataclass(frozen=True)
class Agreement:
    """How closely candidate vectors follow the reference vectors on the probe set."""

    probes: int
    mean_cosine: float
    p1_cosine: float
    min_cosine: float
    max_abs_diff: float
    overlap_at_10: float
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_manifest(self) -> dict:
        return asdict(self)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def top_k_neighbours(vectors: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """[n, k] indices of each row's k most similar other rows (inner product, self excluded)."""
    unit = _unit(vectors)
    out = np.empty((len(unit), k), dtype=np.int64)
    for start in range(0, len(unit), block):
        sims = unit[start:start + block] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start:start + block] = np.take_along_axis(part, order, axis=1)
    return out


def overlap_at_k(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean share of each probe's reference top-k neighbours found in the candidate top-k."""
    k = min(k, len(reference) - 1)
    ref, cand = top_k_neighbours(reference, k), top_k_neighbours(candidate, k)
    shared = [len(set(r).intersection(c)) for r, c in zip(ref.tolist(), cand.tolist())]
    return float(np.mean(shared) / k)


def measure_agreement(
    reference: np.ndarray, candidate: np.ndarray, kinds: Sequence[str] | None = None
) -> Agreement:
    """Compare row-aligned [n, dim] vectors (the reference is PyTorch fp32)."""
    if reference.shape != candidate.shape:
        raise VerificationFailed(
            f"export produced vectors of shape {candidate.shape}, the model {reference.shape}")
    cosine = (_unit(reference) * _unit(candidate)).sum(axis=1)
    by_kind = {}
    if kinds is not None:
        labels = np.asarray(kinds)
        for kind in dict.fromkeys(kinds):
            part = cosine[labels == kind]
            by_kind[kind] = {"probes": int(part.size), "mean_cosine": float(part.mean()),
                             "p1_cosine": float(np.percentile(part, 1))}
    return Agreement(
        probes=len(cosine),
        mean_cosine=float(cosine.mean()),
        p1_cosine=float(np.percentile(cosine, 1)),
        min_cosine=float(cosine.min()),
        max_abs_diff=float(np.abs(reference.astype(np.float64) - candidate).max()),
        overlap_at_10=overlap_at_k(reference, candidate, 10),
        by_kind=by_kind,
    )


def gate_failures(agreement: Agreement, minimums: dict[str, float]) -> list[str]:
    """One readable line per gated metric below its minimum (empty: the gate passes)."""
    return [
        f"{metric.replace('_', ' ')} {getattr(agreement, metric):.5f} < {minimum}"
        for metric, minimum in minimums.items()
        if not getattr(agreement, metric) >= minimum  # NaN fails too
    ]


def agreement_table(agreement: Agreement, minimums: dict[str, float], title: str):
    """A rich Table: every metric, its gate and the verdict, then per-kind cosines."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("metric", "value", "gate", "result"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in METRICS:
        value = getattr(agreement, metric)
        minimum = minimums.get(metric)
        verdict = "" if minimum is None else ("[green]pass" if value >= minimum else "[red]FAIL")
        gate = "" if minimum is None else f">= {minimum}"
        shown = f"{value:.2e}" if metric == "max_abs_diff" else f"{value:.6f}"
        table.add_row(metric.replace("_", " "), shown, gate, verdict)
    for kind, stats in agreement.by_kind.items():
        table.add_row(f"  {kind} ({stats['probes']}) cos mean / p1",
                      f"{stats['mean_cosine']:.6f} / {stats['p1_cosine']:.6f}", "", "")
    return table


def reference_embeddings(
    source, texts: Sequence[str], max_length: int,
    on_batch: Callable[[int], None] | None = None, batch_size: int = 64,
) -> np.ndarray:
    """PyTorch fp32 vectors of the source model, L2-normalised as the exported graph is."""
    import torch

    from export.cpus import usable_cpus

    torch.set_num_threads(usable_cpus())
    if source.library == "sentence_transformers":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(source.path), device="cpu")
        model.max_seq_length = max_length
        encode = lambda chunk: model.encode(chunk, batch_size=batch_size, convert_to_numpy=True,
                                           show_progress_bar=False)  # recserve shows its own progress
    else:
        encode = _mean_pooling_encoder(source.path, max_length)
    parts = []
    for start in range(0, len(texts), batch_size * 4):  # a few batches per progress tick
        chunk = list(texts[start:start + batch_size * 4])
        parts.append(np.asarray(encode(chunk), dtype=np.float32))
        if on_batch is not None:
            on_batch(len(chunk))
    return _unit(np.concatenate(parts)).astype(np.float32)


def _mean_pooling_encoder(path, max_length: int) -> Callable[[list[str]], np.ndarray]:
    """Plain HF encoder: masked mean of the last hidden state (as add_mean_pooling does)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()

    def encode(chunk: list[str]) -> np.ndarray:
        batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()

    return encode
