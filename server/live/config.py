"""LiveConfig: where live writes are kept and how often they are snapshotted and compacted."""

from __future__ import annotations

from export.settings import RecserveSettings, settings_config


class LiveConfig(RecserveSettings):
    model_config = settings_config("live")

    enabled: bool = True
    """Accept UpsertItems, DeleteItems and RecordInteractions (false: a read-only server)."""
    directory: str = ""
    """Write-ahead log and snapshots; empty = a `live/` folder beside the bundle directory."""
    snapshot_interval_s: float = 60.0
    """Snapshot the live state at most this long after the first write it does not cover."""
    snapshot_after_writes: int = 10000
    """...or as soon as this many writes are applied since the last snapshot."""
    keep_snapshots: int = 2
    """Newest valid snapshots kept on disk (older ones are deleted)."""
    wal_retention_s: float = 7 * 86400.0
    """Log records a snapshot covers are deleted once older than this; a bundle built before
    the oldest kept record cannot get every live write replayed onto it."""
    compaction_deleted_share: float = 0.2
    """Rebuild a compact index in the background when deleted items exceed this share."""
    compaction_min_deleted: int = 16
    """...and at least this many items are deleted (tiny indexes are not worth rebuilding)."""
    max_group_writes: int = 256
    """Most writes committed in one log transaction (group commit: one fsync for all)."""
    max_items_per_write: int = 1000
    """Most items in one UpsertItems or DeleteItems call."""
    max_events_per_write: int = 10000
    """Most events in one RecordInteractions call."""
    max_text_chars: int = 20000
    """Longest title or text accepted for an item (longer is refused, not silently cut)."""
    popularity_saturation: float = 10.0
    """Weighted live events at which an item's live popularity (or a pair's live
    co-occurrence) counts as much as the bundle's strongest (values are capped at 1)."""
    cooccurrence_window: int = 5
    """A live event co-occurs with the user's previous this-many items (1/distance each)."""
    cooccurrence_backward_weight: float = 0.5
    """Weight of the reverse direction (new item -> earlier item) of a live co-occurrence."""
    cooccurrence_publish_interval_s: float = 1.0
    """Live co-occurrence counts reach ranking at most this long after they are recorded."""
    request_id_window_s: float = 24 * 3600.0
    """A write retried with the same request_id within this long is answered as a duplicate
    (its first sequence, nothing applied again); keep it below wal_retention_s, since the
    window is rebuilt from the log on restart."""
    request_id_max: int = 1_000_000
    """Most idempotency keys remembered at once (the oldest are forgotten first)."""
    max_request_id_chars: int = 128
    """Longest request_id accepted."""
    applier_poll_interval_s: float = 1.0
    """With several workers, each also checks the log this often (it is normally woken at
    once by the worker that committed; this bounds the lag if a notification is lost)."""
    max_read_wait_s: float = 5.0
    """Longest a read with min_sequence waits for that write when the call has no deadline."""
    old_state_grace_s: float = 30.0
    """After a reload, the longest in-flight calls may keep using the previous bundle."""
