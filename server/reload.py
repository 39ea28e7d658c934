"""Hot reload: serve a new bundle without stopping, or keep the old one and say why.

The new bundle is loaded beside the served one (checksums verified, every bucket warmed up,
one recommendation as a smoke test: open_serving_state), its live writes are replayed from
the log, and the writer swaps it in between two writes. Calls already running finish on the
old state (they hold it); the old batcher stops once they are done (or after a grace period).
Any failure leaves the old bundle serving and raises BundleError with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from export.errors import BundleError, RecserveError
from server.serving_state import ServingConfigs, ServingState, open_serving_state

if TYPE_CHECKING:
    from server.metrics import ServerMetrics
    from server.serving_slot import ServingSlot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    previous_version: str
    bundle_version: str
    replayed_writes: int
    seconds: float


class BundleReloader:
    def __init__(self, configs: ServingConfigs, metrics: "ServerMetrics", slot: "ServingSlot",
                 old_state_grace_s: float) -> None:
        self._configs, self._metrics, self._slot = configs, metrics, slot
        self._grace_s = old_state_grace_s
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task] = set()

    async def reload(self, bundle_path: str | Path) -> ReloadOutcome:
        if self._lock.locked():
            raise BundleError("a reload is already in progress")
        async with self._lock:
            old = self._slot.state
            if old is None:
                raise BundleError("the server is not serving yet")
            started = time.perf_counter()
            try:
                new, replayed = await self._load(bundle_path)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, RecserveError) else f"{type(exc).__name__}: {exc}"
                log.error("reload of %s failed, still serving %s: %s", bundle_path, old.version, reason,
                          exc_info=not isinstance(exc, RecserveError))
                raise BundleError(f"reload of {bundle_path} failed, still serving {old.version}: "
                                  f"{reason}") from exc
            self._retire(old)
            outcome = ReloadOutcome(old.version, new.version, replayed, time.perf_counter() - started)
            log.info("reloaded: %s -> %s (%d live writes replayed, %.1fs)", old.version, new.version,
                     replayed, outcome.seconds)
            return outcome

    async def _load(self, bundle_path: str | Path) -> tuple[ServingState, int]:
        # health is read from the slot's served state only, so the new batcher may report at once
        new = await open_serving_state(bundle_path, self._configs, self._metrics, self._slot.backend_health_changed)
        try:
            live = self._slot.live
            if live is None:
                self._slot.swap(new)
                return new, 0
            prepared, replayed = await live.prepare(new)
            replayed += await live.swap(new, prepared)  # calls slot.swap between two writes
            return new, replayed
        except BaseException:
            if self._slot.state is not new:
                await new.close()
            raise

    def _retire(self, old: ServingState) -> None:
        """Stop the old state's batcher once its in-flight calls are done."""
        async def close_when_idle() -> None:
            deadline = time.monotonic() + self._grace_s
            while old.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await old.close()
            log.info("bundle %s retired", old.version)

        task = asyncio.create_task(close_when_idle())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def wait_retired(self) -> None:
        """Wait for retiring states to close (server stop)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
