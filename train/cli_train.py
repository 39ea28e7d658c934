"""`recserve train`: fine-tune the sentence encoder on interaction data.

    recserve train --catalog FILE --interactions FILE [--base PATH|default] --out MODEL_DIR
                   [--epochs N] [--lora] [--hard-negatives] ...

Writes an ordinary sentence-transformers folder (weights, tokenizer, pooling) that
`recserve export --model MODEL_DIR` takes, plus training.json (split, config, per-epoch
validation figures). Every option also reads from RECSERVE_TRAIN_* and a [train] table.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from export.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, help="catalog file (csv/jsonl/parquet)")
    parser.add_argument("--interactions", required=True, help="interaction file (csv/jsonl/parquet)")
    parser.add_argument("--queries",
                        help="optional file of natural-language queries and the item taken "
                             "after each (columns query, item_id, timestamp)")
    parser.add_argument("--query-columns", help="FIELD=COLUMN,... for the query file")
    parser.add_argument("--base", default="default",
                        help="encoder folder to start from, or 'default' (the shipped MiniLM)")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned model")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--config", help="TOML config file with a [train] table")
    parser.add_argument("--catalog-columns", help="FIELD=COLUMN,... for the catalog file")
    parser.add_argument("--interaction-columns", help="FIELD=COLUMN,... for the interaction file")
    parser.add_argument("--text-attributes",
                        help="comma-separated attributes in item texts (default: all), as in "
                             "`recserve build`; must match the build for the vectors to match")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad input row")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float)
    parser.add_argument("--pairs-per-epoch", type=int, help="training pairs per epoch (0 = all)")
    parser.add_argument("--pairs-per-user", type=int)
    parser.add_argument("--history-items", type=int, help="most history items in a query text")
    parser.add_argument("--item-pairs-per-item", type=int,
                        help="item -> co-interacted item pairs per item (default 3; 0: none)")
    parser.add_argument("--item-pair-share", type=float,
                        help="share of the training pool that is item pairs (default 0.5)")
    parser.add_argument("--max-length", type=int, help="token limit while training")
    parser.add_argument("--validation-fraction", type=float,
                        help="latest share of events held out as the validation period")
    parser.add_argument("--split-time", help="ISO time where the validation period starts")
    parser.add_argument("--validation-pairs", type=int)
    parser.add_argument("--hard-negatives", action="store_true", default=None,
                        help="add one hard negative per pair, mined with the current encoder")
    parser.add_argument("--lora", action="store_true", default=None,
                        help="train LoRA adapters (peft), merged into the saved model")
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--seed", type=int)


def _split_time(text: str | None) -> float | None:
    from export.tabular import parse_timestamp

    if text is None:
        return None
    value = parse_timestamp(text)
    if value is None:
        raise InvalidInput(f"--split-time {text!r} is not an ISO-8601 time or epoch seconds")
    return value


def _output_folder(out: Path, overwrite: bool) -> Path:
    """A fresh temp folder beside `out`; the model moves into `out` only when training ends."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InvalidInput(f"{out} exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.training-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from export.catalog import CatalogColumns, InteractionColumns, ValidationReport
    from export.onnx_export import resolve_model_path
    from export.settings import load_settings
    from train.config import TrainingConfig
    from train.data import load_training_data
    from train.finetune import fine_tune, make_pair_sets
    from train.queries import QueryColumns, read_query_pairs
    from train.report import epoch_line, iso, training_record, write_record

    console = Console(stderr=True)
    config = load_settings(
        TrainingConfig, args.config, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, pairs_per_epoch=args.pairs_per_epoch,
        pairs_per_user=args.pairs_per_user, history_items=args.history_items,
        item_pairs_per_item=args.item_pairs_per_item, item_pair_share=args.item_pair_share,
        max_length=args.max_length, validation_fraction=args.validation_fraction,
        split_time=_split_time(args.split_time), validation_pairs=args.validation_pairs,
        hard_negatives=args.hard_negatives, lora=args.lora, lora_rank=args.lora_rank,
        device=args.device, threads=args.threads, seed=args.seed,
    )
    base = resolve_model_path(args.base)
    out = Path(args.out)
    staging = _output_folder(out, args.overwrite)
    # As `recserve build` reads it: absent = all attributes, "" = none.
    attributes = None if args.text_attributes is None else \
        [a.strip() for a in args.text_attributes.split(",") if a.strip()]

    with console.status("reading catalog and interactions"):
        data = load_training_data(
            args.catalog, args.interactions,
            catalog_columns=CatalogColumns.parse(args.catalog_columns),
            interaction_columns=InteractionColumns.parse(args.interaction_columns),
            text_attributes=attributes, seed=config.seed, strict=args.strict)
        query_pairs = []
        if args.queries:
            data.reports["queries"] = ValidationReport(args.queries, args.strict)
            label_of = {item_id: i for i, item_id in enumerate(data.items.item_ids)}
            query_pairs = read_query_pairs(args.queries, label_of,
                                           QueryColumns.parse(args.query_columns),
                                           data.reports["queries"])
        pairs = make_pair_sets(data, config, query_pairs)
    for report in data.reports.values():
        console.print(report.summary())
    console.print(
        f"{len(data.items):,} items, {len(data.events.user_ids):,} users, "
        f"{len(data.events.labels):,} events; validation period from {iso(pairs.cutoff)}: "
        f"{len(pairs.train_pool):,} training pairs in the pool, {len(pairs.validation):,} "
        f"validation pairs")
    try:
        result = fine_tune(data, config, base, staging, pairs=pairs,
                           on_epoch=lambda r: console.print(epoch_line(r, config.epochs)))
        write_record(staging, training_record(
            result, base=base, catalog=args.catalog, interactions=args.interactions,
            reports=data.reports, text_attributes=attributes))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    console.print(f"fine-tuned model written to {out} in {result.seconds:.0f}s; "
                  f"export it with: recserve export --model {out}")
    return 0
