"""What a training run prints per epoch, and the training.json written beside the model."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

from export.item_text import template_manifest
from train.finetune import EpochRecord, TrainingRun

RECORD_FILE = "training.json"


def iso(epoch_seconds: float) -> str:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def epoch_line(record: EpochRecord, epochs: int) -> str:
    v = record.validation
    head = "before training" if record.epoch == 0 else f"epoch {record.epoch}/{epochs}"
    train = "" if record.train_loss is None else \
        f"train loss {record.train_loss:.4f} ({record.steps} steps, {record.pairs} pairs) | "
    searches = "" if v.recall_queries is None else \
        f" | queries: Recall@{v.k} {v.recall_queries:.4f}, NDCG@{v.k} {v.ndcg_queries:.4f}"
    return (f"{head}: {train}validation loss {v.loss:.4f} | Recall@{v.k} history-text "
            f"{v.recall_text:.4f}, item-vectors {v.recall_items:.4f} | NDCG@{v.k} "
            f"{v.ndcg_text:.4f}, {v.ndcg_items:.4f}{searches} | {record.seconds:.0f}s")


def training_record(run: TrainingRun, *, base: Path, catalog: str, interactions: str,
                    reports: dict, text_attributes) -> dict:
    """Provenance and figures of a run: enough to reproduce it and to judge it."""
    import sentence_transformers
    import torch

    pairs = run.pairs
    return {
        "base_model": str(base),
        "catalog": str(catalog),
        "interactions": str(interactions),
        "input_reports": {name: report.as_dict() for name, report in reports.items()},
        "item_text": template_manifest(text_attributes),
        "split": {
            "cutoff": pairs.cutoff,
            "cutoff_iso": iso(pairs.cutoff),
            "train_pool_pairs": len(pairs.train_pool),
            "validation_pairs": len(pairs.validation),
            "train_query_pairs": sum(p.text is not None for p in pairs.train_pool),
            "train_item_pairs": sum(p.user < 0 for p in pairs.train_pool),
            "validation_query_pairs": sum(p.text is not None for p in pairs.validation),
            "negative_pool_items": int(pairs.negative_pool.sum()),
        },
        "config": run.config.model_dump(),
        "learning_rate": run.config.effective_learning_rate(),
        "trainable_parameters": run.trainable_parameters,
        "total_parameters": run.total_parameters,
        "epochs": [record.as_dict() for record in run.epochs],
        "seconds": run.seconds,
        "versions": {"torch": torch.__version__,
                     "sentence_transformers": sentence_transformers.__version__,
                     "python": platform.python_version()},
    }


def write_record(out: Path, record: dict) -> Path:
    path = Path(out) / RECORD_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path
