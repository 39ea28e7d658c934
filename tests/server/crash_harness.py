"""The crash harness: SIGKILL a server under live writes at random moments, restart, check.

Each round starts `recserve serve` (optionally `--workers N`) as a subprocess, runs writer
threads (upserts, deletes, interactions on items and users each owns), and after a random
delay kills it with SIGKILL. With workers, a round first kills one worker (the writer
committing or a worker applying) while the others go on, waits for its replacement and
checks that every worker serves the same state, and then kills the whole server. Then:
1. recovers the live state offline exactly as a starting server does (newest valid snapshot,
   then the log) and checks it against what was acknowledged: every acknowledged write
   present, an in-doubt call applied whole or not at all, no phantom or duplicate id,
   deleted ids absent, user histories as written, recall@10 of the index against exact
   search >= 0.95;
2. restarts the server and checks the same over gRPC, on every worker;
3. retries each in-doubt call with its request_id, as a client would: it must answer
   `duplicate` exactly when the first attempt was applied, and apply it otherwise.
Snapshots and compactions are made frequent so that kills land in them too. Used by
tests/server/test_crash.py (a few rounds) and bench/crash.py (>= 20 kills).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.live.offline import recover_offline
from server.workers.process import ServerProcess
from tests.server.connections import new_connection
from tests.server.crash_ledger import CrashWriter, WriterLedger, new_ledgers

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
    outcomes = {ledger.name: check_writer(live, ledger, problems) for ledger in ledgers
                if ledger.pending is not None}
    applied = sum(outcomes.values())
    recall = index_recall(live, rng)
    if recall < 0.95:
        problems.append(f"recall@10 {recall:.3f} < 0.95")
    facts = {"live_items": live.bundle.index.size, "last_applied": live.last_applied,
             "snapshot_seq": snapshot_seq, "recall_at_10": recall, "in_doubt": in_doubt,
             "in_doubt_applied": applied, "outcomes": outcomes}
    return facts, problems


def _served_state(port: int, ledgers: list[WriterLedger], facts: dict | None) -> tuple[str, tuple, list[str]]:
    """One connection (so one worker): (worker id, (last applied, live items), problems)."""
    from protos import recommender_pb2 as pb
    from protos import recommender_pb2_grpc as pb_grpc

    problems = []
    with new_connection(port) as channel:  # a connection of its own: it may reach another worker
        stub = pb_grpc.RecommenderStub(channel)
        info = stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        served = (info.last_applied_sequence, info.live_items)
        if facts is not None and served != (facts["last_applied"], facts["live_items"]):
            problems.append(f"served state (seq {served[0]}, {served[1]} items) is not the recovered one "
                            f"(seq {facts['last_applied']}, {facts['live_items']} items)")
        worker = ""
        for ledger in ledgers:
            response = stub.Recommend(pb.RecommendRequest(
                query="crash test item", k=1000, filter=pb.Filter(attribute_equals={"owner": ledger.name})),
                timeout=10)
            worker = response.timings.worker_id
            got = [item.item_id for item in response.items]
            if len(got) != len(set(got)):
                problems.append(f"{ledger.name}: duplicate ids in one response")
            expected = {item: f"{item} v{variant}" for item, variant in ledger.variants.items() if variant}
            if facts is not None and {i.item_id: i.title for i in response.items} != expected:
                problems.append(f"{worker} {ledger.name}: served {sorted(got)[:5]}..., "
                                f"expected {sorted(expected)[:5]}...")
    return worker, served, problems


def check_online(port: int, ledgers: list[WriterLedger], facts: dict, sequences: list[int],
                 workers: int = 1) -> list[str]:
    """The restarted server serves the recovered state, on every worker."""
    problems, seen = [], set()
    for _ in range(8 * workers):  # new connections until every worker answered
        worker, served, found = _served_state(port, ledgers, facts)
        problems += [p for p in found if p not in problems]
        seen.add(worker)
        if len(seen) >= workers:
            break
    if len(seen) < workers:
        problems.append(f"only {len(seen)} of {workers} workers answered")
    if sequences and facts["last_applied"] < max(sequences):
        problems.append(f"acknowledged seq {max(sequences)} > last applied {facts['last_applied']}")
    if len(sequences) != len(set(sequences)):
        problems.append("two acknowledged writes share a sequence number")
    return problems


def retry_in_doubt(port: int, ledgers: list[WriterLedger], calls: dict, outcomes: dict) -> list[str]:
    """Each in-doubt call sent again with its request_id, as a client retries: a duplicate
    exactly when the first attempt was applied; otherwise it applies now (recorded)."""
    import grpc

    from protos import recommender_pb2_grpc as pb_grpc

    problems = []
    with new_connection(port) as channel:  # a connection of its own: it may reach another worker
        stub = pb_grpc.RecommenderStub(channel)
        for ledger in ledgers:
            if ledger.name not in calls:
                continue
            (method, request), pending = calls[ledger.name]
            response = getattr(stub, method)(request, timeout=30)
            if response.duplicate != outcomes[ledger.name]:
                problems.append(f"{ledger.name}: retry of an in-doubt call {'applied' if outcomes[ledger.name] else 'not applied'}"
                                f" answered duplicate={response.duplicate}")
            elif not response.duplicate:  # applied by the retry: acknowledged now
                ledger.variants.update(pending.variants)
                for user, item in pending.events:
                    ledger.histories.setdefault(user, []).append(item)
    return problems


def _in_doubt_calls(ledgers: list[WriterLedger]) -> dict:
    calls = {ledger.name: (ledger.pending_call, ledger.pending) for ledger in ledgers
             if ledger.pending_call is not None and ledger.pending is not None}
    for ledger in ledgers:
        ledger.pending_call = None
    return calls


def converged(port: int, ledgers: list[WriterLedger], workers: int, timeout_s: float = 30.0) -> list[str]:
    """With writes stopped, every worker soon serves the same (last applied, live items)."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, tuple] = {}
    while time.monotonic() < deadline:
        try:
            worker, served, _ = _served_state(port, ledgers, None)
        except Exception:  # noqa: BLE001 - a replacement worker still loading
            time.sleep(0.2)
            continue
        states[worker] = served
        live = [w for w in states if w]
        if len(live) >= workers and len({states[w] for w in live[-workers:]}) == 1:
            return []
        time.sleep(0.05)
    return [f"workers did not converge: {states}"]


def _run_writers(ledgers, port, seed, round_no, sequences):
    stop = threading.Event()
    threads = [CrashWriter(ledger, f"127.0.0.1:{port}", seed * 1000 + round_no * 10 + i, sequences, stop)
               for i, ledger in enumerate(ledgers)]
    for t in threads:
        t.start()
    return stop, threads


def _join(stop, threads) -> list[str]:
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return [f"{t.name}: {t.bug}" for t in threads if t.bug]


def run_crash_test(bundle: Path, work: Path, *, kills: int, writers: int = 4, seed: int = 0,
                   items_per_writer: int = 40, min_run_s: float = 0.3, max_run_s: float = 1.5,
                   workers: int = 1, on_round=None) -> list[RoundReport]:
    from server.served_bundle import ServedBundle

    bundle_ids = list(ServedBundle.load(bundle).catalog.item_ids)
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    ledgers = new_ledgers(writers, items_per_writer, 6, bundle_ids)
    live_dir = work / "live"
    extra = ("--workers", str(workers)) if workers > 1 else ()
    server = ServerProcess(bundle, live_dir, work / "server.log", env=SERVER_ENV, extra_args=extra)
    sequences: list[int] = []
    reports = []
    _, port, restart_s = server.start()
    for round_no in range(1, kills + 1):
        problems: list[str] = []
        acknowledged = 0
        if workers > 1:  # one worker dies (committing or applying) while the others write on
            stop, threads = _run_writers(ledgers, port, seed, round_no, sequences)
            time.sleep(rng.uniform(min_run_s, max_run_s))
            os.kill(rng.choice(server.worker_pids()), signal.SIGKILL)
            time.sleep(0.2)
            problems += _join(stop, threads)
            acknowledged += sum(t.acknowledged for t in threads)
            problems += converged(port, ledgers, workers)
            calls = _in_doubt_calls(ledgers)
            facts, found = check_offline(bundle, live_dir, ledgers, set(bundle_ids), nprng)  # settles them
            problems += found + retry_in_doubt(port, ledgers, calls, facts["outcomes"])
        stop, threads = _run_writers(ledgers, port, seed + 7, round_no, sequences)
        ran = rng.uniform(min_run_s, max_run_s)
        time.sleep(ran)
        server.kill()  # every process at once: the writer may be mid-commit
        problems += _join(stop, threads)
        acknowledged += sum(t.acknowledged for t in threads)
        calls = _in_doubt_calls(ledgers)
        facts, found = check_offline(bundle, live_dir, ledgers, set(bundle_ids), nprng)
        problems += found
        _, port, restart_s = server.start()
        problems += check_online(port, ledgers, facts, sequences, workers)
        problems += retry_in_doubt(port, ledgers, calls, facts["outcomes"])  # the clients' retries
        report = RoundReport(round_no, round(ran, 3), acknowledged, facts["in_doubt"],
                             facts["in_doubt_applied"], facts["last_applied"], facts["live_items"],
                             facts["snapshot_seq"], round(facts["recall_at_10"], 4), round(restart_s, 2), problems)
        reports.append(report)
        if on_round is not None:
            on_round(report)
    server.stop()
    return reports
