"""`recserve inspect DIR`: print a bundle's manifest readably and verify every checksum.

Exit status: 0 when every file matches the manifest, 1 on any mismatch (missing, changed
or unlisted file), 2 when DIR is not a bundle of a known format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXIT_MISMATCH = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder")
    parser.add_argument("--json", action="store_true", help="print the raw manifest as JSON")


def _rows(section: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten a manifest section into (dotted key, value) rows."""
    if isinstance(section, dict):
        rows: list[tuple[str, str]] = []
        for key, value in section.items():
            rows += _rows(value, f"{prefix}{key}.")
        return rows
    text = json.dumps(section) if isinstance(section, list) else str(section)
    return [(prefix.rstrip("."), text if len(text) <= 100 else text[:97] + "...")]


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from export.bundle import read_manifest, verify_checksums

    root = Path(args.bundle)
    manifest = read_manifest(root, verify=False)  # BundleError (exit 2) if not a bundle
    problems = verify_checksums(root, manifest)
    console = Console()
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        console.print(f"[bold]bundle[/bold] {escape(str(root))}  version {manifest.get('version')}  "
                      f"format {manifest.get('format_version')}  created {manifest.get('created_at')}")
        for section in ("encoder", "items", "embedding", "index", "item_text", "features",
                        "catalog_report", "interactions_report", "build"):
            if manifest.get(section) is None:
                continue
            table = Table(title=section, title_justify="left", show_header=False)
            table.add_column("key", style="cyan")
            table.add_column("value")
            for key, value in _rows(manifest[section]):
                table.add_row(escape(key), escape(value))
            console.print(table)
        files = manifest.get("files", {})
        total = sum((root / name).stat().st_size for name in files if (root / name).is_file())
        console.print(f"files: {len(files)} listed, {total / 1e6:,.1f} MB")
    err = Console(stderr=True)
    if problems:
        for problem in problems:
            err.print(f"[red]CHECKSUM[/red] {escape(problem)}")
        err.print(f"[red]{len(problems)} problem(s): this bundle must not be deployed[/red]")
        return EXIT_MISMATCH
    err.print(f"[green]all {len(manifest.get('files', {}))} checksums match[/green]")
    return 0
