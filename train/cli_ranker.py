"""`recserve train-ranker`: fit the reranker's weights on logged interactions.

    recserve train-ranker --bundle DIR --interactions FILE [--out NEW_BUNDLE]
                          [--fit-start Q] [--validation-start Q] [--per-user N] ...

Time slices by event-time quantiles: the interaction tables come from events before
--fit-start, fit examples from [--fit-start, --validation-start), validation examples from
the rest. Candidates and features are the server's own (train/ranker/candidates.py). The
learned weights and the validation figures (initial against learned) go into a NEW bundle's
manifest["ranker"]; the source bundle is never modified.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from export.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle whose candidates are reranked")
    parser.add_argument("--interactions", required=True, help="the interaction log")
    parser.add_argument("--interaction-columns", help="FIELD=COLUMN,... for the interaction file")
    parser.add_argument("--out", help="new bundle folder (default: <bundle>-ranker)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--fit-start", type=float, default=0.8,
                        help="event-time quantile where fit examples start (tables: before)")
    parser.add_argument("--validation-start", type=float, default=0.9,
                        help="event-time quantile where validation examples start")
    parser.add_argument("--per-user", type=int, default=3, help="most examples per user per slice")
    parser.add_argument("--max-examples", type=int, default=3000, help="most fit examples")
    parser.add_argument("--validation-examples", type=int, default=1500,
                        help="most validation examples")
    parser.add_argument("--k", type=int, default=10, help="NDCG/Recall cut-off for validation")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _progress(quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=quiet)


def fit_ranker(args: argparse.Namespace) -> dict:
    """The manifest "ranker" section: learned weights and validation figures."""
    from export.catalog import InteractionColumns, read_interactions
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import make_engine
    from train.evaluation.training_view import load_bundle_events, with_training_tables
    from train.ranker.examples import window_examples
    from train.ranker.fit import collect, fit_weights, ranking_metrics

    if not 0 < args.fit_start < args.validation_start < 1:
        raise InvalidInput("need 0 < --fit-start < --validation-start < 1")
    columns = InteractionColumns.parse(args.interaction_columns)
    bundle = ServedBundle.load(args.bundle)
    events = load_bundle_events(bundle, args.interactions, columns)
    fit_start, validation_start = (float(t) for t in np.quantile(
        events.timestamps, [args.fit_start, args.validation_start]))
    past = [e for e in read_interactions(args.interactions, columns,
                                         known_items=bundle.catalog.label_of)
            if e.timestamp < fit_start]
    engine = make_engine(with_training_tables(bundle, past))
    initial = {n: float(w) for n, w in zip(_feature_names(), engine.weights)}
    fit_examples = window_examples(events, fit_start, validation_start, args.per_user,
                                   args.max_examples, args.seed)
    validation_examples = window_examples(events, validation_start, np.inf, args.per_user,
                                          args.validation_examples, args.seed + 1)
    if not fit_examples or not validation_examples:
        raise InvalidInput("a time slice has no examples; move --fit-start/--validation-start")
    with _progress(args.quiet) as progress:
        sets = {}
        for name, examples in (("fit", fit_examples), ("validation", validation_examples)):
            task = progress.add_task(f"candidates ({name})", total=len(examples))
            sets[name] = collect(engine, examples, args.k,
                                 on_example=lambda t=task: progress.update(t, advance=1))
    learned = fit_weights(sets["fit"], C=args.C, seed=args.seed)
    validation = {
        "initial": ranking_metrics(sets["validation"], initial, args.k),
        "learned": ranking_metrics(sets["validation"], learned, args.k),
        "fit_examples": len(fit_examples),
        "candidate_recall": {name: round(s.candidate_recall, 5) for name, s in sets.items()},
        "slices": {"tables_before": fit_start, "fit": [fit_start, validation_start],
                   "validation_from": validation_start},
    }
    return {"weights": learned, "initial_weights": initial, "validation": validation,
            "method": "logistic regression (scikit-learn), class-balanced, L2 C=%g" % args.C}


def _feature_names():
    from server.ranking.features import FEATURE_NAMES

    return FEATURE_NAMES


def run(args: argparse.Namespace) -> int:
    from train.ranker.bundle_copy import write_with_ranker

    out = Path(args.out) if args.out else Path(str(Path(args.bundle).resolve()) + "-ranker")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InvalidInput(f"{out} exists and is not empty; pass --overwrite to replace it")
    ranker = fit_ranker(args)
    manifest = write_with_ranker(args.bundle, out, ranker, overwrite=args.overwrite)
    v = ranker["validation"]
    k = args.k
    print(json.dumps(ranker["weights"], indent=1))
    print(f"validation NDCG@{k}: initial {v['initial'][f'ndcg@{k}']:.4f} -> learned "
          f"{v['learned'][f'ndcg@{k}']:.4f} ({v['learned']['examples']} examples; next item "
          f"among candidates in {v['candidate_recall']['validation']:.1%})")
    print(f"wrote bundle {out} (version {manifest['version']})")
    return 0
