"""`recserve train-ranker`: refit a bundle's ranker on logged interactions.

    recserve train-ranker --bundle DIR --interactions FILE [--out NEW_BUNDLE]
                          [--fit-start Q] [--validation-start Q] [--per-user N] ...

`recserve build` with interactions already fits a ranker; this refits one on a newer log
(or other slices) into a NEW bundle, the source bundle is never modified. Method, slices and
manifest section: train/ranker/pipeline.py. Every option also reads RECSERVE_RANKER_* and
a [ranker] table of --config.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

from export.errors import InvalidInput


def add_ranker_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ranker fit, shared with `recserve build`."""
    parser.add_argument("--fit-start", type=float,
                        help="event-time quantile where fit examples start (tables: before); 0.8")
    parser.add_argument("--validation-start", type=float,
                        help="event-time quantile where validation examples start; 0.9")
    parser.add_argument("--per-user", type=int, help="most fit examples per user; 10")
    parser.add_argument("--max-examples", type=int, help="most fit examples; 10000")
    parser.add_argument("--validation-per-user", type=int, help="most validation examples per user; 3")
    parser.add_argument("--learning-rate", type=float,
                        help="LightGBM shrinkage (fewer, cheaper trees when larger); 0.1")
    parser.add_argument("--max-trees", type=int,
                        help="most boosting rounds kept (the rank stage's cost budget); 60")
    parser.add_argument("--max-leaves", type=int,
                        help="most leaves a tree may have (deeper trees cost more to serve); 31")
    parser.add_argument("--session-start-share", type=float,
                        help="share of examples without the target's same-time events in the history; 0")
    parser.add_argument("--validation-examples", type=int, help="most validation examples; 1500")
    parser.add_argument("--no-history-adapter", dest="history_adapter", action="store_false",
                        default=None, help="do not fit the map of history interests toward the "
                        "items bought next (train/history_adapter.py)")
    parser.add_argument("--ranker-seed", type=int, help="seed of example sampling and LightGBM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle whose candidates are reranked")
    parser.add_argument("--interactions", required=True, help="the interaction log")
    parser.add_argument("--interaction-columns", help="FIELD=COLUMN,... for the interaction file")
    parser.add_argument("--out", help="new bundle folder (default: <bundle>-ranker)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--config", help="TOML config file with a [ranker] table")
    parser.add_argument("--k", type=int, help="NDCG/Recall cut-off for validation; 10")
    parser.add_argument("--C", type=float, help="inverse L2 strength of the linear fit; 1.0")
    add_ranker_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def ranker_config(args: argparse.Namespace):
    from export.settings import load_settings
    from train.ranker.pipeline import RankerFitConfig

    return load_settings(
        RankerFitConfig, getattr(args, "config", None), fit_start=args.fit_start,
        validation_start=args.validation_start, per_user=args.per_user,
        validation_per_user=args.validation_per_user, session_start_share=args.session_start_share,
        learning_rate=args.learning_rate, max_trees=args.max_trees, max_leaves=args.max_leaves,
        max_examples=args.max_examples, validation_examples=args.validation_examples,
        k=getattr(args, "k", None), C=getattr(args, "C", None), seed=args.ranker_seed,
        history_adapter=args.history_adapter)


@contextmanager
def progress_bars(quiet: bool):
    """A factory (description, total) -> advance() over one rich Progress."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), disable=quiet) as progress:
        def task(description: str, total: int):
            handle = progress.add_task(description, total=total)
            return lambda: progress.update(handle, advance=1)
        yield task


def summary(section: dict) -> str:
    v = section["validation"]
    k = section["config"]["k"]
    line = (f"validation NDCG@{k}: initial {v['initial'][f'ndcg@{k}']:.4f}, linear "
            f"{v['linear'][f'ndcg@{k}']:.4f}")
    if "gbdt" in v:
        line += f", trees {v['gbdt'][f'ndcg@{k}']:.4f} ({section['model']['rounds']} rounds, served)"
    else:
        line += f" (no trees: {section.get('model_skipped')})"
    return line + (f"; {v['linear']['examples']} examples, next item among candidates in "
                   f"{v['candidate_recall']['validation']:.1%}")


def run(args: argparse.Namespace) -> int:
    from export.catalog import InteractionColumns
    from train.ranker.bundle_copy import write_with_ranker
    from train.ranker.pipeline import fit_bundle_ranker

    out = Path(args.out) if args.out else Path(str(Path(args.bundle).resolve()) + "-ranker")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InvalidInput(f"{out} exists and is not empty; pass --overwrite to replace it")
    config = ranker_config(args)
    with progress_bars(args.quiet) as bars:
        fitted = fit_bundle_ranker(args.bundle, args.interactions,
                                   InteractionColumns.parse(args.interaction_columns), config, bars)
    manifest = write_with_ranker(args.bundle, out, fitted.section, overwrite=args.overwrite,
                                 model=fitted.onnx,
                                 adapter=fitted.adapter)
    print(json.dumps(fitted.section["weights"], indent=1))
    print(summary(fitted.section))
    print(f"wrote bundle {out} (version {manifest['version']})")
    return 0
