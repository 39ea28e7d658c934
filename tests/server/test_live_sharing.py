"""One log, two appliers (as two --workers processes have), driven in one event loop.

Real bundles, real write-ahead log, real writer lock and real datagram notifications: a
write taken by one applier reaches the other through its notification (the fallback poll
is set to 30 s, so nothing else could deliver it in time), the other checks later writes
against it, and a retried request_id is a duplicate on either.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from export.runtime import RuntimeConfig
from server.batching.batcher import BatcherConfig
from server.engine import RankingConfig
from server.errors import DeadlineExceeded, InvalidRequest
from server.live.config import LiveConfig
from server.live.log_sharing import LogSharing
from server.live.records import Event, ItemWrite
from server.live.service import LiveWrites
from server.metrics import ServerMetrics
from server.retrieval.retriever import RetrievalConfig
from server.serving_state import ServingConfigs, open_serving_state


@pytest.fixture
async def two_appliers(small_bundle, tmp_path):
    configs = ServingConfigs(RuntimeConfig(provider="cpu", intra_op_threads=1), BatcherConfig(),
                             RetrievalConfig(), RankingConfig())
    config = LiveConfig(applier_poll_interval_s=30.0)
    states, appliers = [], []
    try:
        for index in (0, 1):
            state = await open_serving_state(small_bundle, configs, ServerMetrics())
            states.append(state)
            appliers.append(await LiveWrites.open(tmp_path / "live", config, state, lambda s: None,
                                                  sharing=LogSharing(index, 2)))
        yield appliers
    finally:
        for applier in appliers:
            await applier.close(snapshot=False)
        for state in states:
            await state.close()


async def test_a_write_on_one_applier_reaches_the_other_by_notification(two_appliers):
    a, b = two_appliers
    item = ItemWrite("shared-1", "ZEPPELIN TEA COSY", "a brand new item", {"probe": "shared"})
    written = await a.upsert([item], request_id="s-1")
    give_up = time.monotonic() + 5.0
    while b.last_applied < written.sequence and time.monotonic() < give_up:
        await asyncio.sleep(0.005)  # nobody asks b: only a's datagram can wake it this soon
    assert b.writer.live.is_live("shared-1") and b.last_applied == written.sequence

    again = await b.upsert([item], request_id="s-1")  # the retry reaches the other worker
    assert again.duplicate and again.sequence == written.sequence and b.last_applied == written.sequence

    deleted = await b.delete(["shared-1"])
    event = Event("u-shared", "shared-1", "click", 1.0, time.time())
    with pytest.raises(InvalidRequest, match="unknown or deleted"):
        await a.record([event])  # a has applied b's delete (woken, or under the writer lock) first
    await a.wait_applied(deleted.sequence, time.monotonic() + 5.0)
    assert not a.writer.live.is_live("shared-1") and a.last_applied == b.last_applied


async def test_min_sequence_beyond_the_log_times_out(two_appliers):
    a, _ = two_appliers
    with pytest.raises(DeadlineExceeded):
        await a.wait_applied(a.last_applied + 100, time.monotonic() + 0.2)
