"""`recserve eval`: recommendation quality through the server's own retrieval and ranking.

    recserve eval --bundle [NAME=]DIR [--bundle ...] --interactions FILE
                  [--protocol leave-last-out|time-split|cold-items] [--cutoff TIME] [--k 10,50]
                  [--users N] [--baselines popularity,transitions,item-knn,als] --out DIR

Every bundle is evaluated as the server ranks (its learned ranker when it has one), with
its linear scorer, by content retrieval alone, and each other candidate source alone; and
`candidate_recall` counts how often the next item is among each source's candidates and
the union's (train/evaluation/sources.py). Its interaction tables are recomputed from the
split's training events first (train/evaluation/training_view.py), so no held-out event
leaks into a feature. Classical baselines (popularity, transitions, item-kNN, ALS; the last
two tuned on a validation split of the training events) are fitted on the same events.
Writes results.json, results.md and results.png into --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from export.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", action="append", default=[], metavar="[NAME=]DIR",
                        help="bundle to evaluate (repeatable); NAME labels its rows")
    parser.add_argument("--interactions", required=True, help="the full interaction log")
    parser.add_argument("--interaction-columns", help="FIELD=COLUMN,... for the interaction file")
    parser.add_argument("--protocol", choices=("leave-last-out", "time-split", "cold-items"),
                        default="leave-last-out")
    parser.add_argument("--cutoff", help="time-split: ISO time where the test period starts "
                                         "(default: the 90th percentile of event times)")
    parser.add_argument("--cold-share", type=float, default=0.1,
                        help="cold-items: share of the bought items made new (seeded)")
    parser.add_argument("--k", default="10,50", help="Recall@k cut-offs; NDCG at the smallest")
    parser.add_argument("--users", type=int, default=2000,
                        help="test cases sampled with --seed (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", default="popularity,transitions,item-knn,als",
                        help="comma-separated: popularity, transitions, item-knn, als ('' for "
                             "none); item-knn and als are tuned on a validation split first")
    parser.add_argument("--out", required=True, help="folder for results.json/.md/.png")
    parser.add_argument("--query-items", type=int, default=0,
                        help="also send a query text: the texts of the newest N distinct history "
                             "items (the fine-tuning query side), embedded by the server's batcher")
    parser.add_argument("--save-training-events", metavar="FILE",
                        help="also write the split's training events (csv[.gz]), e.g. for "
                             "`recserve train-ranker` without the test events")
    parser.add_argument("--no-per-source", dest="per_source", action="store_false",
                        help="skip the 'each candidate source alone' rows")
    parser.add_argument("--no-candidate-recall", dest="candidate_recall", action="store_false",
                        help="skip counting how often the next item is among each source's "
                             "candidates")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _bundles(specs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for spec in specs:
        name, _, path = spec.rpartition("=")
        path_ = Path(path)
        if not (path_ / "manifest.json").is_file():
            raise InvalidInput(f"--bundle {spec}: {path_} is not a bundle")
        out.append((name or path_.name, path_))
    return out


def _cases(args, events):
    from export.tabular import parse_timestamp
    from train.evaluation.protocol import cold_item_split, leave_last_out, time_split

    if args.protocol == "leave-last-out":
        return leave_last_out(events), None
    if args.protocol == "cold-items":
        return cold_item_split(events, args.cold_share, args.seed), None
    cutoff = parse_timestamp(args.cutoff) if args.cutoff else float(
        np.quantile(events.timestamps, 0.9))
    if cutoff is None:
        raise InvalidInput(f"--cutoff {args.cutoff!r} is not an ISO-8601 time or epoch seconds")
    return time_split(events, cutoff), cutoff


def _baselines(names: list[str], events, training, n_items: int, seed: int) -> list:
    from train.evaluation import baselines as b
    from train.evaluation.tuning import tuned_als, tuned_item_knn

    makers = {"popularity": b.PopularityRecommender, "transitions": b.TransitionRecommender,
              "item-knn": lambda e, t, n: tuned_item_knn(e, t, n, seed),
              "als": lambda e, t, n: tuned_als(e, t, n, seed)}
    unknown = set(names) - set(makers)
    if unknown:
        raise InvalidInput(f"unknown baselines {sorted(unknown)}; choose from {sorted(makers)}")
    out = []
    for name in names:
        try:
            out.append(makers[name](events, training, n_items))
        except ImportError as exc:  # implicit is optional (the `train` extra)
            print(f"skipping {name}: {exc} (pip install 'recserve[train]')")
    return out


def run(args: argparse.Namespace) -> int:
    from export.catalog import InteractionColumns
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import RETRIEVAL_ONLY, EngineRecommender, make_engine
    from train.evaluation.report import markdown_table, write_report
    from train.evaluation.runner import evaluate, sample_cases
    from train.evaluation.sources import (SOURCE_NAMES, candidate_recall, recall_table,
                                          source_alone_engine)
    from train.evaluation.training_view import (held_out_keys, load_bundle_events,
                                                training_interactions, with_training_tables,
                                                write_interactions)

    bundles = _bundles(args.bundle)
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    columns = InteractionColumns.parse(args.interaction_columns) \
        if args.interaction_columns else None
    started = time.perf_counter()
    if not bundles:  # also for baselines alone: the bundle's catalog defines the item labels
        raise InvalidInput("give at least one --bundle")
    first = ServedBundle.load(bundles[0][1])
    events = load_bundle_events(first, args.interactions, columns)
    cases, cutoff = _cases(args, events)
    if len(cases) == 0:
        raise InvalidInput("the split has no test cases")
    chosen = sample_cases(cases, args.users, args.seed)
    item_ids = first.catalog.item_ids
    train_events = training_interactions(
        args.interactions, held_out_keys(events, cases.training_events, item_ids),
        first.catalog.label_of, columns)

    if args.save_training_events:
        rows = write_interactions(train_events, args.save_training_events)
        print(f"wrote {rows} training events to {args.save_training_events}")
    n_items = len(item_ids)
    names = [n.strip() for n in args.baselines.split(",") if n.strip()]
    recommenders = _baselines(names, events, cases.training_events, n_items, args.seed)
    recall = {}
    encoders_seen: set = set()
    for name, path in bundles:
        bundle = first if path == bundles[0][1] else ServedBundle.load(path)
        if bundle.catalog.item_ids != item_ids:
            raise InvalidInput(f"bundle {path} has a different catalog from {bundles[0][1]}")
        bundle = with_training_tables(bundle, train_events)
        text = args.query_items > 0
        suffix = f" [query: {args.query_items} history texts]" if text else ""

        def row(label: str, engine) -> None:
            recommenders.append(EngineRecommender(f"{name} {label}{suffix}", engine,
                                                  query_items=args.query_items))

        served = make_engine(bundle, with_batcher=text)
        if served.ranker is not served.linear:
            row("union + learned ranker (trees)", served)
        learned = "learned" if bundle.ranker_weights else "default"
        row(f"union + linear scorer ({learned} weights)", make_engine(
            bundle, with_batcher=text, linear_only=True))
        files = bundle.manifest.get("files") or {}
        encoder = (files.get("model.onnx"), files.get("index.hnsw"))
        if encoder not in encoders_seen:  # same encoder + index: the same content rows
            row("content only (retrieval score)", source_alone_engine(
                make_engine(bundle, RETRIEVAL_ONLY, with_batcher=text), "content"))
        if args.per_source and not encoders_seen:  # collaborative sources: no encoder in them
            for source in SOURCE_NAMES[1:]:
                row(f"{source} alone", source_alone_engine(make_engine(bundle), source))
        encoders_seen.add(encoder)
        if args.candidate_recall:
            recall[name] = candidate_recall(make_engine(bundle), cases, chosen, max(ks))

    results = evaluate(recommenders, cases, chosen, recall_ks=ks, ndcg_ks=(ks[0],),
                       show_progress=not args.quiet)
    setup = {
        "protocol": args.protocol, "cutoff": cutoff, "interactions": str(args.interactions),
        "bundles": {name: str(path) for name, path in bundles},
        "cases_total": len(cases), "cases_evaluated": int(len(chosen)), "seed": args.seed,
        "training_events": int(cases.training_events.sum()), "users": len(events.user_ids),
        "items": n_items, "query_items": args.query_items, "seconds": round(time.perf_counter() - started, 1),
        "baseline_tuning": {r.name: r.tuning.grid for r in recommenders if hasattr(r, "tuning")},
    }
    setup["candidate_recall"] = recall
    paths = write_report(results, Path(args.out), setup)
    print(markdown_table(results))
    if recall:
        print("next item among the candidates (share of cases; mean list size):")
        print(recall_table(recall))
    print(f"{len(chosen)} of {len(cases)} cases, {setup['seconds']} s; wrote "
          + ", ".join(str(p) for p in paths.values()))
    return 0
