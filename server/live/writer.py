"""LiveWriter: the one task per serving process that logs and applies live writes, in order.

Calls queue their write and wait. The writer takes everything queued (up to
max_group_writes) and, holding the log's writer lock (server/live/log_sharing.py: with
several worker processes, one of them commits at a time), first applies what other workers
logged, answers retries of writes already logged (same request_id) as duplicates, checks
each write against the state as the earlier ones will leave it, commits the accepted ones
to the write-ahead log in one durable transaction (group commit), applies them to the
served bundle and only then answers each call. So an acknowledged write is durable and
already visible in this process; the other workers are notified and apply it within
milliseconds (a read with `min_sequence` waits for it: `wait_applied`).

Between groups the writer also publishes live co-occurrence counts, takes snapshots,
starts and finishes index compactions, and swaps in a reloaded bundle: everything that
changes the served state happens here, one thing at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from server.errors import Unavailable
from server.live import snapshot
from server.live.compaction import Compaction, compaction_due
from server.live.config import LiveConfig
from server.live.embedding import embedder
from server.live.live_state import LiveState
from server.live.log_sharing import LogNotifier, LogSharing, WriterLock
from server.live.records import Write
from server.live.replay import prepare_upsert, replay
from server.live.wal import WriteAheadLog
from server.serving_state import ServingState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    sequence: int
    applied: int
    duplicate: bool = False  # the request_id was logged before: nothing applied again


@dataclass(eq=False)
class _Queued:
    write: Write | None  # None: a control message
    future: asyncio.Future
    control: str = ""
    argument: Any = None


class LiveWriter:
    def __init__(self, wal: WriteAheadLog, directory: Path, config: LiveConfig, serving: ServingState,
                 live: LiveState, on_swap: Callable[[ServingState], None],
                 sharing: LogSharing | None = None) -> None:
        self.wal, self.directory, self.config = wal, directory, config
        self.serving, self.live = serving, live
        self._on_swap = on_swap
        self.sharing = sharing or LogSharing()
        self._writer_lock = WriterLock(directory)
        self._notifier = LogNotifier(directory, self.sharing)
        self._catch_up_queued = False
        self._polled_at = time.monotonic()
        self._progress = asyncio.Event()  # set (and replaced) whenever last_applied advances
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._compaction: Compaction | None = None
        self._persisting: asyncio.Task | None = None
        self._unsnapshotted_since: float | None = None  # monotonic time of the first such write
        self._unsnapshotted = 0
        self.failed: str | None = None
        self.snapshots_taken = 0
        self.compactions = 0

    @property
    def last_applied(self) -> int:
        return self.live.last_applied

    def start(self, snapshot_soon: bool = False) -> None:
        if snapshot_soon and self.sharing.takes_snapshots:
            self._unsnapshotted_since, self._unsnapshotted = 0.0, 1
        self._task = asyncio.create_task(self._run(), name="recserve-live-writer")
        self._notifier.start(self._announced)

    # ---- the API ---------------------------------------------------------------------------

    async def submit(self, write: Write) -> WriteResult:
        """Log and apply one write; returns once it is durable and visible."""
        return await self._enqueue(_Queued(write, self._new_future()))

    async def swap(self, serving: ServingState, live: LiveState) -> int:
        """Catch a prepared bundle up with the log and serve it; returns the writes replayed."""
        return await self._enqueue(_Queued(None, self._new_future(), "swap", (serving, live)))

    async def wait_applied(self, seq: int, timeout_s: float) -> bool:
        """Wait until this process has applied write `seq` (read-your-writes); False on timeout."""
        if self.live.last_applied >= seq:
            return True
        self.request_catch_up()  # in case its notification was lost
        give_up = time.monotonic() + timeout_s
        while self.live.last_applied < seq:
            left = give_up - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, self.config.applier_poll_interval_s))
            except asyncio.TimeoutError:
                self.request_catch_up()
        return True

    def request_catch_up(self) -> None:
        """Apply what other workers logged, soon (between two groups of writes)."""
        if self._catch_up_queued or self._task is None or self._task.done():
            return
        self._catch_up_queued = True
        future = self._new_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it
        self._queue.put_nowait(_Queued(None, future, "catch_up"))

    def _announced(self, seq: int) -> None:
        if seq > self.live.last_applied:
            self.request_catch_up()

    async def stop(self, snapshot: bool = True) -> None:
        """Finish queued writes, take a final snapshot (optional), and stop."""
        if self._task is None or self._task.done():
            return
        try:
            await self._enqueue(_Queued(None, self._new_future(), "stop", snapshot))
        finally:
            await asyncio.gather(self._task, return_exceptions=True)
            if self._compaction is not None:
                self._compaction.cancel()
            self._notifier.close()
            self._writer_lock.close()

    def _new_future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, item: _Queued):
        if self.failed is not None:
            raise Unavailable(f"live writes are stopped: {self.failed}")
        if self._task is None or self._task.done():
            raise Unavailable("live writes are not accepted (the server is stopping)")
        self._queue.put_nowait(item)
        return await item.future

    # ---- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not await self._step():
                pass
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("the live writer crashed")
                self.failed = f"the live writer crashed ({exc!r})"
            raise
        finally:
            self._fail_queued(Unavailable("live writes are not accepted (the server is stopping)"))

    async def _step(self) -> bool:
        """Handle what is queued (or idle housekeeping); True when the writer must stop."""
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=self._idle_timeout())
        except asyncio.TimeoutError:
            await self._housekeeping()
            return False
        items = [first]
        while len(items) < self.config.max_group_writes and not self._queue.empty():
            items.append(self._queue.get_nowait())
        group: list[_Queued] = []
        for position, item in enumerate(items):
            if item.write is not None:
                group.append(item)
                continue
            await self._commit(group)
            group = []
            if await self._control(item):
                for rest in items[position + 1:]:
                    _answer(rest, exc=Unavailable("the server is stopping"))
                return True
        await self._commit(group)
        await self._housekeeping()
        return False

    def _idle_timeout(self) -> float | None:
        waits = []
        if self._unsnapshotted_since is not None:
            waits.append(self._unsnapshotted_since + self.config.snapshot_interval_s - time.monotonic())
        if self.live.counters.has_pending:
            waits.append(self.config.cooccurrence_publish_interval_s)
        if self.sharing.shared:  # a lost notification must not leave this worker behind for long
            waits.append(self._polled_at + self.config.applier_poll_interval_s - time.monotonic())
        if self._compaction is not None:
            waits.append(0.05)
        return max(0.01, min(waits)) if waits else None

    async def _commit(self, group: list[_Queued]) -> None:
        """Check, log (one transaction) and apply a group of writes, answering each."""
        if not group or self.failed is not None:
            for item in group:
                _answer(item, exc=Unavailable(f"live writes are stopped: {self.failed}"))
            return
        await self._writer_lock.acquire()
        try:
            await self._catch_up()  # what other workers logged: checks need the latest state
            accepted, retries = await self._accept(group)
            if accepted and await self._log(accepted):
                await self._apply(accepted)
        finally:
            self._writer_lock.release()
        for item in retries:  # the same request_id twice in one group: the first one counts
            seq = self.live.requests.sequence_of(item.write.request_id)
            _answer(item, result=WriteResult(seq, 0, True) if seq is not None else None,
                    exc=None if seq is not None else Unavailable("the first attempt failed; retry"))
        if accepted:
            self._notifier.notify(self.live.last_applied)

    async def _accept(self, group: list[_Queued]) -> tuple[list[_Queued], list[_Queued]]:
        """The writes to log (checked), answering duplicates and refusals at once."""
        pending: dict[str, bool] = {}
        accepted, retries, first_ids = [], [], set()
        for item in group:
            if item.future.done():  # the caller gave up before its write was logged
                continue
            request_id = item.write.request_id
            seq = self.live.requests.sequence_of(request_id)
            if seq is not None:
                _answer(item, result=WriteResult(seq, 0, True))
                continue
            if request_id and request_id in first_ids:
                retries.append(item)
                continue
            try:
                await prepare_upsert(item.write, self.live, self._embed)  # a reload since it was embedded
                self.live.check(item.write, pending)  # last: it records the write's effect in pending
            except Exception as exc:  # noqa: BLE001 - this write is refused (not logged); the others go on
                _answer(item, exc=exc)
                continue
            accepted.append(item)
            if request_id:
                first_ids.add(request_id)
        return accepted, retries

    async def _log(self, accepted: list[_Queued]) -> bool:
        try:
            await asyncio.to_thread(self.wal.append, [item.write for item in accepted])
            return True
        except Exception as exc:  # noqa: BLE001 - nothing was logged; the callers may retry
            log.exception("write-ahead log commit failed")
            for item in accepted:
                _answer(item, exc=Unavailable(f"the write-ahead log could not commit: {exc}"))
            return False

    async def _apply(self, accepted: list[_Queued]) -> None:
        for item in accepted:
            try:
                applied = self.live.apply(item.write)
            except Exception as exc:  # noqa: BLE001 - logged but not applied: stop, restart replays it
                log.exception("applying logged write %d failed; live writes stop", item.write.seq)
                self.failed = f"write {item.write.seq} is logged but could not be applied ({exc})"
                for rest in accepted[accepted.index(item):]:
                    _answer(rest, exc=Unavailable(f"live writes are stopped: {self.failed}"))
                return
            self._advanced()
            _answer(item, result=WriteResult(item.write.seq, applied))
            self._count_unsnapshotted(1)
            await asyncio.sleep(0)  # let reads in between writes of a large group

    async def _catch_up(self) -> int:
        """Apply every write other workers logged after ours (in sequence order)."""
        self._polled_at = time.monotonic()
        if not self.sharing.shared:
            return 0  # this process is the log's only writer: nothing to catch up on
        replayed = await replay(self.live, self.wal, self.live.last_applied, embedder(self.serving))
        if replayed:
            self._count_unsnapshotted(replayed)
            self._advanced()
        return replayed

    def _advanced(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _embed(self, texts: list[str]):
        return await embedder(self.serving)(texts)

    def _count_unsnapshotted(self, n: int) -> None:
        if not self.sharing.takes_snapshots:
            return
        if self._unsnapshotted_since is None:
            self._unsnapshotted_since = time.monotonic()
        self._unsnapshotted += n

    async def _control(self, item: _Queued) -> bool:
        """Run a control message; True when the writer must stop."""
        try:
            if item.control == "catch_up":
                self._catch_up_queued = False
                if self.failed is None:
                    await self._catch_up()
                _answer(item, result=None)
            elif item.control == "swap":
                _answer(item, result=await self._swap(*item.argument))
            elif item.control == "stop":
                if item.argument and self._unsnapshotted and self.failed is None \
                        and self.sharing.takes_snapshots:
                    await self._snapshot()
                await self._wait_persisted()
                _answer(item, result=None)
                return True
        except Exception as exc:  # noqa: BLE001 - reported to whoever asked
            _answer(item, exc=exc)
        return False

    # ---- between groups --------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        if self.failed is not None:
            return
        if self.sharing.shared and time.monotonic() - self._polled_at >= self.config.applier_poll_interval_s:
            await self._catch_up()
        self.live.counters.publish()
        if self._compaction is not None and self._compaction.done():
            if self._compaction.finish():
                self.compactions += 1
            self._compaction = None
        elif self._compaction is None and compaction_due(self.live.overlay.index, self.config):
            self._compaction = Compaction(self.live)
        due = self.sharing.takes_snapshots and self._unsnapshotted and (
            self._unsnapshotted >= self.config.snapshot_after_writes
            or time.monotonic() - self._unsnapshotted_since >= self.config.snapshot_interval_s)
        if due and (self._persisting is None or self._persisting.done()):
            await self._snapshot()

    async def _snapshot(self) -> None:
        """Save the index and copy the state now (writes wait); make it durable in the background."""
        await self._wait_persisted()
        live = self.live
        paused = time.perf_counter()
        folder = await asyncio.to_thread(snapshot.start_draft, self.directory, live.last_applied)
        await asyncio.to_thread(snapshot.save_index, live, folder / "index.hnsw")
        draft = snapshot.capture(live, folder)
        self._unsnapshotted_since, self._unsnapshotted = None, 0
        self._persisting = asyncio.create_task(self._persist(draft, time.perf_counter() - paused))

    async def _persist(self, draft: snapshot.SnapshotDraft, paused_s: float) -> None:
        started = time.perf_counter()
        try:
            path = await asyncio.to_thread(snapshot.persist, draft, self.config.keep_snapshots)
            dropped = await asyncio.to_thread(
                self.wal.truncate, draft.seq, time.time() - self.config.wal_retention_s)
        except Exception:  # noqa: BLE001 - the log still has everything; try again later
            log.exception("snapshot at seq %d failed", draft.seq)
            self._count_unsnapshotted(1)
            return
        self.snapshots_taken += 1
        log.info("snapshot %s written in %.2fs, writes held back %.3fs (%d log records deleted)",
                 path.name, time.perf_counter() - started, paused_s, dropped)

    async def _wait_persisted(self) -> None:
        if self._persisting is not None:
            await asyncio.gather(self._persisting, return_exceptions=True)

    async def _swap(self, serving: ServingState, live: LiveState) -> int:
        replayed = await replay(live, self.wal, live.last_applied, embedder(serving))
        if self._compaction is not None:
            self._compaction.cancel()
            self._compaction = None
        await self._wait_persisted()
        self.serving, self.live = serving, live
        self._on_swap(serving)
        self._count_unsnapshotted(1)  # the new bundle has no snapshot yet
        self._unsnapshotted_since = 0.0 if self.sharing.takes_snapshots else None
        self._advanced()
        return replayed

    def _fail_queued(self, exc: Exception) -> None:
        while not self._queue.empty():
            _answer(self._queue.get_nowait(), exc=exc)


def _answer(item: _Queued, *, result: Any = None, exc: Exception | None = None) -> None:
    if item.future.done():
        return
    if exc is not None:
        item.future.set_exception(exc)
    else:
        item.future.set_result(result)
