"""Which logged writes a bundle still needs, and replaying them onto it.

The rule (docs/LIVE_WRITES.md): a bundle already contains every write with
seq <= its cutoff, and needs every write after it.
- If the manifest carries `live_sequence` (the release pipeline exported the catalog from
  this log up to that seq), that is the cutoff.
- Otherwise the cutoff is the last write received before the bundle's build started
  (`created_at` minus the build's duration): a catalog exported for that build could not
  contain later writes, and is taken to contain the earlier ones.
The cutoff is recorded in the log the first time a bundle version is served, so a later
restart replays exactly the same writes whatever the clock says then.

Replay is idempotent (LiveState.apply skips what it has seen) and re-embeds upserts whose
logged vectors came from a different encoder than the bundle's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import numpy as np

from export.bundle import Manifest
from export.errors import BundleError
from server.live.embedding import Embed
from server.live.live_state import LiveState
from server.live.records import UPSERT, Write
from server.live.wal import WriteAheadLog

log = logging.getLogger(__name__)



def build_started_at(manifest: Manifest) -> float | None:
    """Epoch seconds when the bundle's build started (None when the manifest does not say)."""
    if not manifest.created_at:
        return None
    finished = dt.datetime.fromisoformat(manifest.created_at).timestamp()
    return finished - float(manifest.build.get("seconds") or 0.0)


def bundle_cutoff(manifest: Manifest, wal: WriteAheadLog, *, strict: bool) -> int:
    """The seq through which the bundle already contains live writes (see module docstring).

    strict: raise BundleError when the log no longer holds every write the bundle needs
    (a reload); otherwise only warn (a start: the operator chose this bundle).
    """
    key = f"cutoff:{manifest.version}"
    stored = wal.meta(key)
    if stored is not None:
        return int(stored)
    truncated_seq = int(wal.meta("truncated_through_seq", "0"))
    truncated_time = float(wal.meta("truncated_through_time", "0"))
    if manifest.live_sequence is not None:
        cutoff = manifest.live_sequence
        lost = truncated_seq > cutoff
    else:
        started = build_started_at(manifest)
        cutoff = wal.last_sequence_before(started) if started is not None else 0
        lost = truncated_seq > 0 and (started is None or truncated_time >= started)
    cutoff = max(cutoff, truncated_seq) if lost else cutoff
    if lost:
        message = (f"bundle {manifest.version} predates the write-ahead log's retention "
                   f"(writes through seq {truncated_seq} were deleted): live writes made before "
                   "it was built and not in it cannot be replayed")
        if strict:
            raise BundleError(message)
        log.warning("%s", message)
    wal.set_meta(key, str(cutoff))
    return cutoff


async def prepare_upsert(write: Write, live: LiveState, embed: Embed | None) -> None:
    """Re-embed a logged upsert whose vectors came from another encoder than live's bundle."""
    if write.kind != UPSERT or write.encoder == live.fingerprint:
        return
    if embed is None:
        raise BundleError(f"write {write.seq} was embedded by another encoder and no encoder is at hand")
    write.vectors = np.asarray(await embed(live.item_texts(write.items)), dtype=np.float32)
    write.encoder = live.fingerprint


async def replay(live: LiveState, wal: WriteAheadLog, after_seq: int, embed: Embed | None = None,
                 *, batch: int = 256) -> int:
    """Apply every logged write after after_seq onto live; returns how many were applied."""
    replayed, seq = 0, max(after_seq, live.last_applied)
    while True:
        writes = await asyncio.to_thread(wal.read_batch, seq, batch)
        if not writes:
            return replayed
        for write in writes:
            await prepare_upsert(write, live, embed)
            live.apply(write)
            replayed += 1
        seq = writes[-1].seq
        await asyncio.sleep(0)  # let requests run between batches


def replay_sync(live: LiveState, wal: WriteAheadLog, after_seq: int) -> int:
    """The same without an event loop or encoder (offline checks: crash test, tools)."""
    replayed = 0
    for write in wal.read_after(max(after_seq, live.last_applied)):
        if write.kind == UPSERT and write.encoder != live.fingerprint:
            raise BundleError(f"write {write.seq} needs re-embedding; use replay()")
        live.apply(write)
        replayed += 1
    return replayed
