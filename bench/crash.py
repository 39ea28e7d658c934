"""Crash test: SIGKILL a server under live writes at random moments, restart it, check everything.

    python bench/crash.py --bundle DIR [--kills 20] [--writers 4] [--seed 0] [--workers 2]
    python bench/crash.py --encoder DIR [--items 400] ...   # build a sample bundle first

Each round starts `recserve serve` as a subprocess, runs writer threads (upserts, deletes,
interactions on items and users each owns), kills the server with SIGKILL after a random
delay, then:
1. recovers the live state offline exactly as a starting server does (newest valid snapshot,
   then the log) and checks it against what was acknowledged: every acknowledged write
   present, an in-doubt call applied whole or not at all, no phantom or duplicate id,
   deleted ids absent, user histories as written, recall@10 of the index against exact
   search >= 0.95;
2. restarts the server and checks the same over gRPC (filtered Recommend per writer,
   GetInfo counts and last applied sequence).
Snapshots and compactions are made frequent so that kills land in them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.server.crash_harness import RoundReport, run_crash_test  # noqa: E402


def _sample_bundle(encoder: Path, items: int, out: Path) -> Path:
    import csv
    import gzip

    from export.build import build_bundle
    from export.demo import demo_catalog_path

    with gzip.open(demo_catalog_path(), "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [row for _, row in zip(range(items), reader)]
    catalog = out / "catalog.csv"
    with open(catalog, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    build_bundle(encoder, catalog, None, out / "bundle", progress=False)
    return out / "bundle"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve")
    parser.add_argument("--encoder", type=Path, help="exported encoder: build a sample bundle from the demo catalog")
    parser.add_argument("--items", type=int, default=400, help="demo items in the sample bundle")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="serve with --workers N (one worker is "
                        "also killed alone each round)")
    parser.add_argument("--work", type=Path, help="live directory and server log (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the per-round report here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="recserve-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or _sample_bundle(args.encoder, args.items, work)
    started = time.perf_counter()

    def show(r: RoundReport) -> None:
        verdict = "ok" if not r.problems else "FAIL: " + "; ".join(r.problems[:3])
        print(f"kill {r.round:3d} after {r.ran_s:5.2f}s  acked {r.acknowledged:4d}  in doubt {r.in_doubt} "
              f"(applied {r.in_doubt_applied})  seq {r.last_applied:6d}  items {r.live_items:5d}  "
              f"snapshot {r.snapshot_seq:6d}  recall@10 {r.recall_at_10:.3f}  restart {r.restart_s:.1f}s  {verdict}",
              flush=True)

    reports = run_crash_test(bundle, work, kills=args.kills, writers=args.writers, seed=args.seed,
                             workers=args.workers, on_round=show)
    failed = [r for r in reports if r.problems]
    acked = sum(r.acknowledged for r in reports)
    print(f"\n{len(reports)} kills, {acked} acknowledged writes, "
          f"{sum(r.in_doubt for r in reports)} in doubt ({sum(r.in_doubt_applied for r in reports)} applied), "
          f"min recall@10 {min(r.recall_at_10 for r in reports):.3f}, "
          f"median restart {np.median([r.restart_s for r in reports]):.2f}s, "
          f"{len(failed)} rounds with problems, {time.perf_counter() - started:.0f}s; work dir {work}")
    log = (work / "server.log").read_text()
    print(f"server log: {log.count(' written in ')} snapshots written, "
          f"{log.count('restored snapshot')} restarts from a snapshot, {log.count('index compacted')} compactions")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
