"""LiveWrites: the live-write side of a server: the live directory, its log, recovery, the writer.

Opening it locks the live directory (one server per log: with several workers the supervisor
holds that lock for all of them), recovers the served bundle's live state (newest valid
snapshot, then the log after it) and starts this process's writer. The gRPC layer calls
upsert / delete / record (and wait_applied for min_sequence reads); a reload calls
prepare + swap.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from server.errors import DeadlineExceeded
from server.live import snapshot
from server.live.config import LiveConfig
from server.live.embedding import EMBED_SLICE, Embed, embedder
from server.live.live_state import LiveState
from server.live.log_sharing import LogSharing
from server.live.records import (DELETE, INTERACTIONS, UPSERT, Event, ItemWrite, Write, validate_events,
                                 validate_item_ids, validate_items, validate_request_id)
from server.live.replay import bundle_cutoff, replay
from server.live.directory import live_directory, lock_live_directory  # noqa: F401 - re-exported
from server.live.wal import WriteAheadLog
from server.live.writer import LiveWriter, WriteResult
from server.serving_state import ServingState

log = logging.getLogger(__name__)

async def recover(live: LiveState, wal: WriteAheadLog, directory: Path, embed: Embed | None,
                  *, strict: bool) -> int:
    """Newest valid snapshot of live's bundle, then the log after it; returns writes replayed."""
    after = bundle_cutoff(live.bundle.manifest, wal, strict=strict)
    found = snapshot.newest_valid(directory, live.version, live.fingerprint)
    if found is not None and found[1]["seq"] >= after:
        path, state = found
        snapshot.restore(live, path, state)
        log.info("restored snapshot %s (seq %d)", path.name, state["seq"])
        after = state["seq"]
    # Idempotency keys of the window, also those a snapshot covers (it does not keep them).
    live.requests.load(wal.request_ids_since(time.time() - live.config.request_id_window_s))
    started = time.perf_counter()
    replayed = await replay(live, wal, after, embed)
    log.info("bundle %s: replayed %d logged writes after seq %d in %.2fs; last applied %d",
             live.version, replayed, after, time.perf_counter() - started, live.last_applied)
    return replayed


class LiveWrites:
    def __init__(self, directory: Path, config: LiveConfig, wal: WriteAheadLog, writer: LiveWriter,
                 lock) -> None:
        self.directory, self.config, self.wal, self.writer = directory, config, wal, writer
        self._lock = lock

    @classmethod
    async def open(cls, directory: Path, config: LiveConfig, serving: ServingState,
                   on_swap: Callable[[ServingState], None], lock=None,
                   sharing: LogSharing | None = None) -> "LiveWrites":
        # lock: from lock_live_directory() when the caller locked before loading the bundle
        sharing = sharing or LogSharing.from_env()
        lock = lock if lock is not None else lock_live_directory(directory, sharing)
        wal = None
        try:
            wal = WriteAheadLog(directory)
            live = LiveState(serving.bundle, config)
            replayed = await recover(live, wal, directory, embedder(serving), strict=False)
            writer = LiveWriter(wal, directory, config, serving, live, on_swap, sharing)
            writer.start(snapshot_soon=replayed > 0)
        except BaseException:
            if wal is not None:
                wal.close()
            lock.close()
            raise
        return cls(directory, config, wal, writer, lock)

    @property
    def last_applied(self) -> int:
        return self.writer.last_applied

    # ---- writes (validated here; the writer checks what needs state) -----------------------

    async def upsert(self, items: list[ItemWrite], deadline: float | None = None,
                     request_id: str = "") -> WriteResult:
        items = validate_items(items, self.config)
        request_id = validate_request_id(request_id, self.config)
        received = time.time()
        serving, live = self.writer.serving, self.writer.live
        seq = live.requests.sequence_of(request_id)
        if seq is not None:  # a retry of a logged write: don't embed it again
            return WriteResult(seq, 0, True)
        texts = live.item_texts(items)
        # In slices the admission queue can take (it refuses more texts than it holds at once).
        parts = [(await serving.batcher.embed(texts[i:i + EMBED_SLICE], deadline, cache=False))[0]
                 for i in range(0, len(texts), EMBED_SLICE)]
        return await self.writer.submit(Write(UPSERT, received, items=items, vectors=np.concatenate(parts),
                                              encoder=live.fingerprint, request_id=request_id))

    async def delete(self, item_ids: list[str], request_id: str = "") -> WriteResult:
        ids = validate_item_ids(item_ids, self.config)
        request_id = validate_request_id(request_id, self.config)
        return await self.writer.submit(Write(DELETE, time.time(), item_ids=ids, request_id=request_id))

    async def record(self, events: list[Event], request_id: str = "") -> WriteResult:
        events = validate_events(events, self.config)
        request_id = validate_request_id(request_id, self.config)
        return await self.writer.submit(Write(INTERACTIONS, time.time(), events=events,
                                              request_id=request_id))

    async def wait_applied(self, seq: int, deadline: float | None) -> None:
        """Read-your-writes: return once this process has applied write `seq`, or raise
        DeadlineExceeded when the call's deadline (or max_read_wait_s) passes first."""
        if seq <= self.writer.last_applied:
            return
        timeout = self.config.max_read_wait_s if deadline is None else deadline - time.monotonic()
        if not await self.writer.wait_applied(seq, timeout):
            raise DeadlineExceeded(f"write {seq} was not applied in time here "
                                   f"(last applied {self.writer.last_applied})")

    # ---- reload ----------------------------------------------------------------------------

    async def prepare(self, serving: ServingState) -> tuple[LiveState, int]:
        """Live state for a newly loaded bundle, caught up with the log as of now."""
        live = LiveState(serving.bundle, self.config)
        replayed = await recover(live, self.wal, self.directory, embedder(serving), strict=True)
        return live, replayed

    async def swap(self, serving: ServingState, live: LiveState) -> int:
        """Replay what was logged since `prepare`, then serve `serving` (atomically)."""
        return await self.writer.swap(serving, live)

    async def close(self, snapshot: bool = True) -> None:
        try:
            await self.writer.stop(snapshot=snapshot)
        finally:
            self.wal.close()
            self._lock.close()
