"""Crash test: SIGKILL a server under live writes at random moments, restart it, check everything.

    python bench/crash.py --bundle DIR [--kills 20] [--writers 4] [--seed 0]
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
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crash_ledger import CrashWriter, WriterLedger, new_ledgers  # noqa: E402

# Frequent snapshots and compactions, so kills also land in the middle of them.
SERVER_ENV = {"RECSERVE_LIVE_SNAPSHOT_AFTER_WRITES": "40", "RECSERVE_LIVE_SNAPSHOT_INTERVAL_S": "1",
              "RECSERVE_LIVE_COMPACTION_DELETED_SHARE": "0.01", "RECSERVE_LIVE_COMPACTION_MIN_DELETED": "10"}
RECALL_QUERIES = 200


@dataclass
class RoundReport:
    round: int
    ran_s: float
    acknowledged: int
    in_doubt: int
    in_doubt_applied: int
    last_applied: int
    live_items: int
    snapshot_seq: int
    recall_at_10: float
    restart_s: float
    problems: list[str] = field(default_factory=list)


class ServerProcess:
    """`recserve serve` on a free port, output to a log file, killed with SIGKILL."""

    def __init__(self, bundle: Path, live_dir: Path, log_path: Path, env: dict | None = None) -> None:
        self.bundle, self.live_dir, self.log_path = bundle, live_dir, log_path
        self.env = SERVER_ENV if env is None else env

    def start(self, timeout_s: float = 120.0) -> tuple[subprocess.Popen, int, float]:
        started = time.perf_counter()
        log = open(self.log_path, "a")
        offset = self.log_path.stat().st_size
        process = subprocess.Popen(
            [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(self.bundle),
             "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
             "--live-dir", str(self.live_dir), "--log-level", "INFO"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **self.env},
            cwd=Path(__file__).resolve().parents[1])
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path) as fh:
                fh.seek(offset)
                for line in fh:
                    if "recserve: serving bundle" in line:
                        port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
                        return process, port, time.perf_counter() - started
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}; see {self.log_path}")
            time.sleep(0.05)
        process.kill()
        raise RuntimeError(f"server did not start in {timeout_s}s; see {self.log_path}")


def recover_offline(bundle: Path, live_dir: Path):
    """The live state a restarting server would serve (same code path, no encoder needed)."""
    from server.live import snapshot
    from server.live.config import LiveConfig
    from server.live.live_state import LiveState
    from server.live.replay import bundle_cutoff, replay_sync
    from server.live.wal import WriteAheadLog
    from server.served_bundle import ServedBundle

    live = LiveState(ServedBundle.load(bundle), LiveConfig())
    wal = WriteAheadLog(live_dir)
    try:
        after = bundle_cutoff(live.bundle.manifest, wal, strict=False)
        found = snapshot.newest_valid(live_dir, live.version, live.fingerprint)
        snapshot_seq = 0
        if found is not None:
            snapshot.restore(live, *found)
            after = snapshot_seq = found[1]["seq"]
        replay_sync(live, wal, after)
    finally:
        wal.close()
    return live, snapshot_seq


def observed_variants(live, ledger: WriterLedger) -> dict[str, int | None]:
    catalog, present = live.bundle.catalog, live.bundle.index.present
    seen = {}
    for item_id in ledger.item_ids:
        label = catalog.label_of.get(item_id)
        attrs = catalog.attributes[label] if label is not None else {}
        listed = label is not None and present[label] and attrs.get("owner") == ledger.name
        seen[item_id] = int(attrs["variant"]) if listed else None
    return seen


def check_writer(live, ledger: WriterLedger, problems: list[str]) -> bool:
    """Compare the recovered state with the ledger, settle the in-doubt call; True if it applied."""
    seen = observed_variants(live, ledger)
    pending = ledger.pending
    outcomes: set[bool] = set()  # of the in-doubt call, item by item and user by user
    for item_id, variant in seen.items():
        expected = ledger.variants[item_id]
        after = pending.variants.get(item_id, expected) if pending else expected
        if after == expected:
            if variant != expected:
                problems.append(f"{ledger.name}: {item_id} is variant {variant}, acknowledged {expected}")
        elif variant in (expected, after):
            outcomes.add(variant == after)
        else:
            problems.append(f"{ledger.name}: {item_id} is variant {variant}, expected {expected} or {after}")
    catalog, users = live.bundle.catalog, live.bundle.users
    for user in ledger.users:
        got = [catalog.item_ids[label] for label in users.get(user).labels]
        acked = ledger.histories.get(user, [])
        extra = [item for u, item in pending.events if u == user] if pending else []
        if extra and got in (acked, acked + extra):
            outcomes.add(got != acked)
        elif got != acked:
            problems.append(f"{ledger.name}: history of {user} is {got}, acknowledged {acked} (+{extra})")
    if len(outcomes) > 1:
        problems.append(f"{ledger.name}: an in-doubt call was applied in part")
    applied = outcomes == {True}
    if pending and applied:
        ledger.variants.update(pending.variants)
        for user, item in pending.events:
            ledger.histories.setdefault(user, []).append(item)
    ledger.pending = None
    return applied


def index_recall(live, rng: np.random.Generator, k: int = 10) -> float:
    index = live.bundle.index
    present = np.flatnonzero(index.present)
    picked = rng.choice(present, size=min(RECALL_QUERIES, len(present)), replace=False)
    queries = index.vectors[picked]
    scores = queries @ index.vectors[present].T
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    _, sims = index.knn(queries, k)
    return float(np.minimum((sims >= kth[:, None] - 1e-5).sum(axis=1), k).mean() / k)


def check_offline(bundle: Path, live_dir: Path, ledgers: list[WriterLedger], bundle_ids: set[str],
                  rng: np.random.Generator) -> tuple[dict, list[str]]:
    live, snapshot_seq = recover_offline(bundle, live_dir)
    problems: list[str] = []
    catalog = live.bundle.catalog
    if len(set(catalog.item_ids)) != len(catalog.item_ids):
        problems.append("duplicate item ids in the recovered catalog")
    known = bundle_ids | {item for ledger in ledgers for item in ledger.item_ids}
    phantoms = [item for item in catalog.item_ids if item not in known]
    if phantoms:
        problems.append(f"phantom items: {phantoms[:5]}")
    in_doubt = sum(ledger.pending is not None for ledger in ledgers)
    applied = sum(check_writer(live, ledger, problems) for ledger in ledgers)
    recall = index_recall(live, rng)
    if recall < 0.95:
        problems.append(f"recall@10 {recall:.3f} < 0.95")
    facts = {"live_items": live.bundle.index.size, "last_applied": live.last_applied,
             "snapshot_seq": snapshot_seq, "recall_at_10": recall, "in_doubt": in_doubt,
             "in_doubt_applied": applied}
    return facts, problems


def check_online(port: int, ledgers: list[WriterLedger], facts: dict, sequences: list[int]) -> list[str]:
    import grpc

    from protos import recommender_pb2 as pb
    from protos import recommender_pb2_grpc as pb_grpc

    problems = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        info = stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        if info.last_applied_sequence != facts["last_applied"] or info.live_items != facts["live_items"]:
            problems.append(f"served state (seq {info.last_applied_sequence}, {info.live_items} items) is not "
                            f"the recovered one (seq {facts['last_applied']}, {facts['live_items']} items)")
        if sequences and info.last_applied_sequence < max(sequences):
            problems.append(f"acknowledged seq {max(sequences)} > last applied {info.last_applied_sequence}")
        for ledger in ledgers:
            response = stub.Recommend(pb.RecommendRequest(
                query="crash test item", k=1000, filter=pb.Filter(attribute_equals={"owner": ledger.name})),
                timeout=10)
            got = [item.item_id for item in response.items]
            if len(got) != len(set(got)):
                problems.append(f"{ledger.name}: duplicate ids in one response")
            expected = {item: f"{item} v{variant}" for item, variant in ledger.variants.items() if variant}
            if {i.item_id: i.title for i in response.items} != expected:
                problems.append(f"{ledger.name}: served {sorted(got)[:5]}..., expected {sorted(expected)[:5]}...")
    if len(sequences) != len(set(sequences)):
        problems.append("two acknowledged writes share a sequence number")
    return problems


def run_crash_test(bundle: Path, work: Path, *, kills: int, writers: int = 4, seed: int = 0,
                   items_per_writer: int = 40, min_run_s: float = 0.3, max_run_s: float = 1.5,
                   on_round=None) -> list[RoundReport]:
    from server.served_bundle import ServedBundle

    bundle_ids = list(ServedBundle.load(bundle).catalog.item_ids)
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    ledgers = new_ledgers(writers, items_per_writer, 6, bundle_ids)
    live_dir = work / "live"
    server = ServerProcess(bundle, live_dir, work / "server.log")
    sequences: list[int] = []
    reports = []
    process, port, restart_s = server.start()
    for round_no in range(1, kills + 1):
        stop = threading.Event()
        threads = [CrashWriter(ledger, f"127.0.0.1:{port}", seed * 1000 + round_no * 10 + i, sequences, stop)
                   for i, ledger in enumerate(ledgers)]
        for t in threads:
            t.start()
        ran = rng.uniform(min_run_s, max_run_s)
        time.sleep(ran)
        process.send_signal(signal.SIGKILL)
        process.wait()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        problems = [f"{t.name}: {t.bug}" for t in threads if t.bug]
        facts, found = check_offline(bundle, live_dir, ledgers, set(bundle_ids), nprng)
        problems += found
        process, port, restart_s = server.start()
        problems += check_online(port, ledgers, facts, sequences)
        report = RoundReport(round_no, round(ran, 3), sum(t.acknowledged for t in threads), facts["in_doubt"],
                             facts["in_doubt_applied"], facts["last_applied"], facts["live_items"],
                             facts["snapshot_seq"], round(facts["recall_at_10"], 4), round(restart_s, 2), problems)
        reports.append(report)
        if on_round is not None:
            on_round(report)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return reports


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

    reports = run_crash_test(bundle, work, kills=args.kills, writers=args.writers, seed=args.seed, on_round=show)
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
