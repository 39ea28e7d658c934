"""`recserve export --model PATH|default --out DIR [--precision ...] [--max-length N]`.

Exit status: 0 exported and verified; 2 bad input (one line on stderr); 3 the export
failed the verification gate. In both failure cases nothing is left at --out.
Options override RECSERVE_EXPORT_* / RECSERVE_VERIFICATION_* variables, which override the
[export] and [verification] tables of --config.
"""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from export.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="encoder folder (sentence-transformers or Hugging Face), or 'default' "
                             "for the shipped all-MiniLM-L6-v2")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--precision", help="auto (default), fp32, int8 or fp16")
    parser.add_argument("--max-length", type=int, help="token limit; default: the model's own")
    parser.add_argument("--int8-target",
                        help="CPU the int8 model will run on: this-cpu (default), vnni, avx512, "
                             "avx2, arm64")
    parser.add_argument("--no-fuse", action="store_true", help="skip ORT's transformer fusions")
    parser.add_argument("--config", help="TOML file with [export] and [verification] tables")


def run(args: argparse.Namespace) -> int:
    from export.encoder_export import ExportConfig, export_encoder, one_line, resolve_precision
    from export.settings import load_settings
    from export.verification import VerificationGate

    if args.precision is not None:
        resolve_precision(args.precision, available=[])  # one-line error for unknown values
    try:
        config = load_settings(
            ExportConfig, args.config, precision=args.precision, max_length=args.max_length,
            int8_target=args.int8_target, fuse=False if args.no_fuse else None)
        gate = load_settings(VerificationGate, args.config)
    except ValidationError as exc:
        raise InvalidInput(one_line(exc)) from exc
    except (OSError, ValueError) as exc:  # unreadable file, or not TOML
        raise InvalidInput(f"cannot read config file {args.config}: {exc}") from exc
    manifest = export_encoder(args.model, args.out, config, gate)
    model = manifest["model"]
    summary = {"precision": manifest["precision"],
               **{key: model[key] for key in ("dim", "max_length", "pooling")}}
    print(f"exported {args.out}: {json.dumps(summary)}")
    return 0
