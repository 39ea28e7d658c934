"""`recserve build`: exported encoder + catalog (+ interactions) -> a deployable bundle."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", required=True,
                        help="encoder folder (recserve export output, or model.onnx + tokenizer/)")
    parser.add_argument("--catalog", required=True, help="catalog file: .csv[.gz], .jsonl[.gz], .parquet")
    parser.add_argument("--interactions", default=None, help="interaction log file (optional)")
    parser.add_argument("--out", required=True, help="bundle folder to create")
    parser.add_argument("--m", type=int, default=None, help="HNSW M (default 16)")
    parser.add_argument("--ef-construction", type=int, default=None,
                        help="HNSW ef_construction (default 200)")
    parser.add_argument("--target-recall", type=float, default=None,
                        help="recall@10 the default ef must reach (default 0.98)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="token limit for item texts (default: the encoder's, else 128)")
    parser.add_argument("--catalog-columns", default=None, metavar="FIELD=COL,...",
                        help="map catalog columns, e.g. item_id=sku,title=name,"
                             "attributes=brand|category")
    parser.add_argument("--interaction-columns", default=None, metavar="FIELD=COL,...",
                        help="map interaction columns, e.g. user_id=customer,timestamp=ts,"
                             "timestamp_unit=ms")
    parser.add_argument("--text-attributes", default=None, metavar="A,B",
                        help="attributes used in item texts (default all; '' for none)")
    parser.add_argument("--half-life-days", type=float, default=None,
                        help="popularity decay half-life (default 30)")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="fail on the first bad row instead of counting it")
    parser.add_argument("--threads", type=int, default=None,
                        help="HNSW build threads (default 1: reproducible; 0 = all usable, faster)")
    parser.add_argument("--retrieval", choices=["hnsw", "milvus"], default=None,
                        help="retrieval backend to serve from (default hnsw; milvus loads a collection)")
    parser.add_argument("--milvus-uri", default=None, help="Milvus server for --retrieval milvus")
    parser.add_argument("--engine", choices=["local", "ray"], default=None,
                        help="embed here (default) or with a Ray Data actor pool (GPU actors if any)")
    parser.add_argument("--ray-workers", type=int, default=None,
                        help="Ray embedding actors (default: one per GPU, else per CPU)")
    parser.add_argument("--config", default=None, help="TOML config file ([build] section)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from export.build import BuildConfig, build_bundle
    from export.catalog import CatalogColumns, InteractionColumns
    from export.settings import load_settings

    text_attributes = None
    if args.text_attributes is not None:
        text_attributes = [a.strip() for a in args.text_attributes.split(",") if a.strip()]
    config = load_settings(
        BuildConfig, args.config, m=args.m, ef_construction=args.ef_construction,
        target_recall=args.target_recall, max_length=args.max_length,
        half_life_days=args.half_life_days, strict=args.strict, threads=args.threads,
        text_attributes=text_attributes, retrieval=args.retrieval, milvus_uri=args.milvus_uri,
        engine=args.engine, ray_workers=args.ray_workers,
    )
    manifest = build_bundle(
        args.encoder, args.catalog, args.interactions, args.out, config=config,
        catalog_columns=CatalogColumns.parse(args.catalog_columns),
        interaction_columns=InteractionColumns.parse(args.interaction_columns),
        overwrite=args.overwrite, progress=not args.quiet,
    )
    console = Console(stderr=True)
    index, embedding = manifest["index"], manifest["embedding"]
    console.print(
        f"bundle {manifest['version']}: {manifest['items']['count']:,} items, "
        f"{embedding['items_per_second']:,.0f} items/s embedded, index ef={index['ef']} "
        f"(recall@10 {index['recall_at_10']:.3f}), built in {manifest['build']['seconds']:.1f}s"
    )
    for key in ("catalog_report", "interactions_report"):
        report = manifest.get(key)
        if report and report["problems"]:
            console.print(f"{key.replace('_', ' ')}: " + ", ".join(
                f"{n:,} {reason}" for reason, n in report["problems"].items()))
    print(args.out)
    return 0
