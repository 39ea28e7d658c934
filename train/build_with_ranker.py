"""`recserve build`: the bundle, and with interactions a learned ranker fitted inside the build.

    recserve build --encoder DIR --catalog FILE [--interactions FILE] --out DIR [--no-ranker]
                   [every option of export/cli_build.py] [ranker options of train-ranker]

export/ builds the bundle (encoder, index, item store, feature tables) and knows nothing of
training; this command, in train/ (train -> export, never the reverse), builds it into a
staging folder beside --out, fits the ranker on the staged bundle's own candidates by time
slices of the same interaction log (train/ranker/pipeline.py), and commits the final bundle
to --out with the ranker in it. Without interactions, or with --no-ranker, it is exactly
export's build and the server ranks with the linear scorer.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from export import cli_build
from export.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from train.cli_ranker import add_ranker_arguments

    cli_build.add_arguments(parser)
    parser.add_argument("--no-ranker", action="store_true",
                        help="do not fit the learned ranker (linear scorer with default weights)")
    group = parser.add_argument_group("learned ranker (with --interactions)")
    add_ranker_arguments(group)


def run(args: argparse.Namespace) -> int:
    if args.interactions is None or args.no_ranker:
        return cli_build.run(args)
    from export.catalog import InteractionColumns
    from train.cli_ranker import progress_bars, ranker_config, summary

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InvalidInput(f"output {out.resolve()} already exists and is not empty")
    config = ranker_config(args)  # refuse bad ranker options before the long build

    def build(staging: Path) -> None:
        staged = argparse.Namespace(**{**vars(args), "out": str(staging), "overwrite": False})
        with contextlib.redirect_stdout(sys.stderr):  # it prints the staging path
            cli_build.run(staged)

    with progress_bars(args.quiet) as bars:
        section, manifest = build_ranked(build, out, args.interactions,
                                         InteractionColumns.parse(args.interaction_columns),
                                         config, bars, overwrite=args.overwrite)
    print(f"{summary(section)}; bundle version {manifest['version']}", file=sys.stderr)
    print(args.out)
    return 0


def build_ranked(build: Callable[[Path], None], out: Path, interactions, columns, config,
                 progress=None, overwrite: bool = False) -> tuple[dict, dict]:
    """`build(staging)` writes a bundle into a staging folder beside `out`; the ranker is
    fitted on it and the final bundle, ranker included, is committed to `out`.
    Returns (manifest["ranker"], the final manifest)."""
    from train.ranker.bundle_copy import write_with_ranker
    from train.ranker.pipeline import fit_bundle_ranker

    staging = out.parent / f".{out.name}.unranked-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build(staging)
        fitted = fit_bundle_ranker(staging, interactions, columns, config, progress)
        manifest = write_with_ranker(staging, out, fitted.section, overwrite=overwrite,
                                     model=fitted.onnx, adapter=fitted.adapter, move=True,
                                     record_parent=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return fitted.section, manifest
