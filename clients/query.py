"""`recserve query`: ask a running server for recommendations and show them as a table.

    recserve query --target HOST:PORT (--text T | --user U | --history ID,ID,...) [--k 10] [--explain]

--text, --user and --history may be combined; the server then mixes them as the API does.
Exit codes: 0 results shown, 1 the server answered with an error or could not be reached,
2 a usage mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from clients.client import RecommenderClient
from clients.errors import RecommenderError
from clients.options import add_connection_arguments, options_from_args
from clients.results import ItemFilter, Recommendation

EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to recommend for (at least one)")
    what.add_argument("--text", help="free-text query, e.g. 'white metal lantern'")
    what.add_argument("--user", help="a known user id, e.g. 17850")
    what.add_argument("--history", help="item ids the user saw, comma-separated, most recent last")
    parser.add_argument("--k", type=int, default=10, help="number of items (default %(default)s)")
    parser.add_argument("--diversity", type=float, default=0.0, help="0 = relevance .. 1 = diversity")
    parser.add_argument("--exclude", default="", help="item ids never to return, comma-separated")
    parser.add_argument("--explain", action="store_true", help="show the reason behind each item")
    parser.add_argument("--json", action="store_true", help="print the response as JSON instead")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    history = _split(args.history)
    if not (args.text or args.user or history):
        print("recserve query: give --text, --user or --history", file=sys.stderr)
        return EXIT_USAGE
    item_filter = ItemFilter(exclude_item_ids=_split(args.exclude)) if args.exclude else None
    try:
        with RecommenderClient(options=options_from_args(args)) as client:
            result = client.recommend(args.text, user_id=args.user, history=history, k=args.k,
                                      filter=item_filter, diversity=args.diversity,
                                      explain=args.explain)
    except ValueError as exc:
        print(f"recserve query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RecommenderError as exc:
        print(f"recserve query: {exc}", file=sys.stderr)
        return EXIT_SERVER_ERROR
    if args.json:
        print(json.dumps(_as_json(result), indent=2))
    else:
        Console().print(results_table(result, title=_title(args, history), explain=args.explain))
    if fell_back_to_popular(result):
        print("recserve query: nothing personal matched (unknown user or history ids, no query text): "
              "these are popular items", file=sys.stderr)
    return 0


FALLBACK_SOURCES = frozenset({"popular", "trending"})


def fell_back_to_popular(result: Recommendation) -> bool:
    """Every item came only from the popularity sources (servers that name sources)."""
    named = [set(item.sources) for item in result.items if item.sources]
    return bool(named) and len(named) == len(result.items) and all(s <= FALLBACK_SOURCES for s in named)


def results_table(result: Recommendation, *, title: str, explain: bool) -> Table:
    t = result.timings
    caption = (f"bundle {result.bundle_version} · server {t.total_us / 1000:.1f} ms "
               f"(queue {t.queue_us / 1000:.1f}, encode {t.encode_us / 1000:.1f}, "
               f"retrieve {t.retrieve_us / 1000:.1f}, rank {t.rank_us / 1000:.1f}) · "
               f"round trip {result.latency_s * 1000:.1f} ms")
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    table.add_column("retrieval", justify="right")
    if explain:
        table.add_column("why")
    for rank, item in enumerate(result.items, 1):
        row = [str(rank), item.item_id, item.title, f"{item.score:.3f}", f"{item.retrieval_score:.3f}"]
        if explain:
            row.append(_why(item))
        table.add_row(*row)
    return table


def _why(item) -> str:
    top = sorted(item.contributions, key=lambda c: abs(c.contribution), reverse=True)[:3]
    parts = ", ".join(f"{c.feature} {c.contribution:+.2f}" for c in top)
    return "\n".join(p for p in (item.reason, f"[dim]{parts}[/dim]" if parts else "") if p)


def _title(args: argparse.Namespace, history: list[str]) -> str:
    parts = []
    if args.text:
        parts.append(f"text “{args.text}”")
    if args.user:
        parts.append(f"user {args.user}")
    if history:
        parts.append(f"history of {len(history)} items (last {history[-1]})")
    return "Recommendations for " + " + ".join(parts)


def _as_json(result: Recommendation) -> dict:
    return asdict(result)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]
