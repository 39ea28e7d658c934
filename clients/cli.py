"""The `recserve` console script: one subcommand per user-facing job.

Subcommand modules are imported only when their command runs, so `recserve query` does not
pay for torch, and the client package has no import-time dependency on server or export.
Each module provides `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export.cli_export", "export an encoder to verified, quantized ONNX"),
    "data": ("export.cli_data", "derive a catalog and interactions from a public data set"),
    # train/ fits the learned ranker inside the build (export must not import train).
    "build": ("train.build_with_ranker", "build a deployable bundle from an encoder and a catalog "
                                         "(with interactions: and a learned ranker)"),
    "inspect": ("export.cli_inspect", "print a bundle's manifest and verify its checksums"),
    "serve": ("server.cli", "serve recommendations over gRPC"),
    "serve-ray": ("server.ray_serve.cli", "serve a bundle as Ray Serve replicas (same gRPC API)"),
    "query": ("clients.query", "ask a running server for recommendations"),
    "loadtest": ("clients.loadtest.cli", "load-test a running server"),
    "release": ("clients.release", "export, verify, build, publish and deploy a bundle"),
    "train": ("train.cli_train", "fine-tune the encoder on interaction data"),
    "train-ranker": ("train.cli_ranker", "refit a bundle's ranker on logged interactions"),
    "eval": ("train.cli_eval", "measure recommendation quality against baselines"),
}

EXIT_USER_ERROR = 2


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: recserve [--version] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "recserve <command> --help for a command's options"]
    return "\n".join(lines)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("recserve")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-V", "--version"):
        print(f"recserve {version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_USER_ERROR
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"recserve: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"recserve {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from clients.options import InvalidOption
    from export.errors import RecserveError  # light module; keeps errors one line

    try:
        if name == "serve" and not args.bundle:  # the default bundle is built by train/ (it fits a ranker)
            from train.default_bundle import default_bundle_path

            args.bundle = str(default_bundle_path())
        return int(module.run(args) or 0)
    except (RecserveError, InvalidOption) as exc:
        print(f"recserve {name}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
