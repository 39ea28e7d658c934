"""Idempotent writes: a retried write (same request_id) is applied once, also across kill -9."""

from __future__ import annotations

import sqlite3

import grpc
import numpy as np

from clients.client import RecommenderClient
from clients.results import Interaction
from protos import recommender_pb2 as pb
from server.live.offline import recover_offline
from server.live.records import INTERACTIONS, Event, Write
from server.live.request_ids import RecentRequests
from server.live.wal import WriteAheadLog
from server.workers.process import ServerProcess


def test_recent_requests_forget_by_age_and_by_count():
    recent = RecentRequests(window_s=10.0, max_ids=2)
    recent.add("a", 1, 100.0)
    recent.add("a", 9, 101.0)  # the first write with a key is the one retries see
    recent.add("b", 2, 105.0)
    assert recent.sequence_of("a", now=108.0) == 1
    assert recent.sequence_of("a", now=111.0) is None  # older than the window
    recent.add("c", 3, 111.0)
    recent.add("d", 4, 112.0)
    assert len(recent) == 2 and recent.sequence_of("b", now=112.0) is None  # bounded
    assert recent.sequence_of("", now=112.0) is None


def test_request_ids_are_logged_and_a_version_1_log_gains_the_column(tmp_path):
    db = sqlite3.connect(tmp_path / WriteAheadLog.FILE)
    db.executescript("""CREATE TABLE writes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
        payload TEXT NOT NULL, vectors BLOB, encoder TEXT NOT NULL DEFAULT '', received_at REAL NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO writes(kind, payload, received_at) VALUES ('delete', '["x"]', 5.0);
        PRAGMA user_version=1;""")
    db.close()
    wal = WriteAheadLog(tmp_path)
    event = Event("u", "i", "click", 1.0, 10.0)
    wal.append([Write(INTERACTIONS, 10.0, events=(event,), request_id="r-1"),
                Write(INTERACTIONS, 11.0, events=(event,))])
    assert [(w.seq, w.request_id) for w in wal.read_after(0)] == [(1, ""), (2, "r-1"), (3, "")]
    assert wal.request_ids_since(0.0) == [("r-1", 2, 10.0)]
    assert wal.request_ids_since(10.5) == []
    wal.close()


async def test_a_retried_write_returns_its_first_sequence_and_applies_nothing(running_server):
    server, stub, _ = running_server
    item = pb.Item(item_id="idem-1", title="IDEMPOTENT LANTERN", text="a lantern written twice")
    first = await stub.UpsertItems(pb.UpsertItemsRequest(items=[item], request_id="up-1"))
    again = await stub.UpsertItems(pb.UpsertItemsRequest(items=[item], request_id="up-1"))
    assert not first.duplicate and first.applied == 1
    assert again.duplicate and again.sequence == first.sequence and again.applied == 0

    events = [pb.Interaction(user_id="idem-user", item_id="idem-1", event="click")]
    same = [stub.RecordInteractions(pb.RecordInteractionsRequest(events=events, request_id="ev-1"))
            for _ in range(3)]  # concurrent retries: one group commit, one applied
    answers = [await call for call in same]
    assert len({a.sequence for a in answers}) == 1 and sum(not a.duplicate for a in answers) == 1
    history = server.state.bundle.users.get("idem-user").labels
    assert len(history) == 1
    other = await stub.RecordInteractions(pb.RecordInteractionsRequest(events=events, request_id="ev-2"))
    assert not other.duplicate and other.sequence > answers[0].sequence
    too_long = pb.RecordInteractionsRequest(events=events, request_id="x" * 500)
    try:
        await stub.RecordInteractions(too_long)
        raise AssertionError("an overlong request_id was accepted")
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_record_interactions_retried_across_kill_9_is_counted_once(small_bundle, tmp_path):
    server = ServerProcess(small_bundle, tmp_path / "live", tmp_path / "server.log")
    _, port, _ = server.start()
    try:
        with RecommenderClient(f"127.0.0.1:{port}") as client:
            items = [i.item_id for i in client.recommend("christmas gift", k=2).items]
            events = [Interaction("kill9-user", item, "purchase") for item in items]
            first = client.record_interactions(events, request_id="retry-me")
        server.kill()  # as if the answer was lost: the client retries against the restarted server
        _, port, _ = server.start()
        with RecommenderClient(f"127.0.0.1:{port}") as client:
            retry = client.record_interactions(events, request_id="retry-me")
            last_applied = client.info().last_applied_sequence
        assert retry.duplicate and retry.sequence == first.sequence and retry.applied == 0
        assert last_applied == first.sequence  # the retry logged nothing
    finally:
        assert server.stop() == 0
    live, _ = recover_offline(small_bundle, tmp_path / "live")
    labels = live.bundle.users.get("kill9-user").labels
    assert [live.bundle.catalog.item_ids[label] for label in np.asarray(labels)] == items  # once each
