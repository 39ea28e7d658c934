"""The live state a restarting server would serve, recovered offline (no encoder, no gRPC).

Same steps as a starting server: the bundle's cutoff, the newest valid snapshot, then the
log after it. Used by the crash checks and by tools that inspect a live directory.
"""

from __future__ import annotations

from pathlib import Path

from server.live import snapshot
from server.live.config import LiveConfig
from server.live.live_state import LiveState
from server.live.replay import bundle_cutoff, replay_sync
from server.live.wal import WriteAheadLog
from server.served_bundle import ServedBundle


def recover_offline(bundle: Path, live_dir: Path) -> tuple[LiveState, int]:
    """(recovered live state, seq of the snapshot it started from; 0 = none)."""
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
