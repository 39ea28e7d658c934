"""`recserve release`: export, verify, build, compare, publish and (optionally) deploy a bundle.

    recserve release --model PATH|default --catalog FILE [--interactions FILE] --publish-dir DIR
                     [--target HOST:PORT] [--force] [--max-regression 0.02] ...

Exit codes (clients/release/outcome.py, docs/RELEASE.md): 0 released, 2 bad input,
3 verification gate failed, 4 quality regression refused, 5 deploy failed and rolled back,
6 rollback failed. The outcome is printed as one JSON object on stdout and appended to
<publish-dir>/releases.jsonl; progress and explanations go to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clients.options import add_connection_arguments
from clients.release.outcome import EXIT_OK, ReleaseError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="fine-tuned encoder folder (sentence-transformers or Hugging Face), or "
                             "'default' for the shipped all-MiniLM-L6-v2")
    parser.add_argument("--catalog", required=True, type=Path,
                        help="catalog file: .csv[.gz], .jsonl[.gz], .parquet")
    parser.add_argument("--interactions", type=Path, default=None,
                        help="interaction log: feature tables, and the held-out quality probe")
    parser.add_argument("--publish-dir", required=True, type=Path,
                        help="where releases v1, v2, ... and the `current` pointer live")
    parser.add_argument("--force", action="store_true",
                        help="publish even when the candidate measures worse than the current release")
    parser.add_argument("--max-regression", type=float, default=None,
                        help="largest allowed drop in held-out recall@10 against the current "
                             "release, absolute (default 0.02)")
    parser.add_argument("--probe-users", type=int, default=None,
                        help="users in the held-out probe (default 2000)")
    parser.add_argument("--probe-seed", type=int, default=0,
                        help="seed of the probe's user sample and tie order (default 0)")
    parser.add_argument("--precision", default=None, help="auto (default), fp32, int8 or fp16")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML file with [export], [verification] and [build] tables")
    parser.add_argument("--catalog-columns", default=None, metavar="FIELD=COL,...",
                        help="map catalog columns, as for recserve build")
    parser.add_argument("--interaction-columns", default=None, metavar="FIELD=COL,...",
                        help="map interaction columns, as for recserve build")
    parser.add_argument("--quiet", action="store_true", help="no progress bars while building")
    deploy = parser.add_argument_group(
        "deploy (with --target)", "the server reloads `current` from its own release directory: "
        "start it with `recserve serve --release-dir <publish-dir>`")
    deploy.add_argument("--reload-timeout", type=float, default=600.0,
                        help="seconds the server may take to load and warm the bundle (default 600)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from clients.options import options_from_args
    from clients.release.deploy import DeployTimeouts
    from clients.release.pipeline import Release, ReleaseRequest
    from clients.release.probe import DEFAULT_PROBE_USERS
    from clients.release.quality import DEFAULT_MAX_REGRESSION

    console = Console(stderr=True)
    request = ReleaseRequest(
        model=args.model, catalog=args.catalog, interactions=args.interactions,
        publish_dir=args.publish_dir, target=args.target,
        client_options=options_from_args(args) if args.target else None,
        force=args.force,
        max_regression=(DEFAULT_MAX_REGRESSION if args.max_regression is None
                        else args.max_regression),
        probe_users=DEFAULT_PROBE_USERS if args.probe_users is None else args.probe_users,
        probe_seed=args.probe_seed,
        precision=args.precision, config_file=args.config,
        catalog_columns=args.catalog_columns, interaction_columns=args.interaction_columns,
        timeouts=DeployTimeouts(reload_s=args.reload_timeout), progress=not args.quiet,
    )
    release = Release(request, console)
    try:
        summary = release.run()
    except ReleaseError as exc:
        console.print(f"[red]recserve release: {exc}", highlight=False)
        print(json.dumps({**release.summary, "status": exc.status, "error": str(exc),
                          **exc.details, "exit_code": exc.exit_code}))
        return exc.exit_code
    print(json.dumps({**summary, "exit_code": EXIT_OK}))
    return EXIT_OK
