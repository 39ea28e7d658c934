"""The live directory of a server: where it is, and the lock that gives it to one server.

Stdlib only (and light recserve modules): the worker supervisor takes this lock for all its
workers without importing the live-write stack.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

from export.bundle import fsync_dir
from export.errors import BundleError
from server.live.log_sharing import LogSharing

if TYPE_CHECKING:
    from server.live.config import LiveConfig

LOCK_FILE = "LOCK"


def live_directory(bundle_path: str | Path, config: "LiveConfig") -> Path:
    """The configured directory, else `live/` beside the bundle directory (which is immutable)."""
    if config.directory:
        return Path(config.directory)
    return Path(os.path.abspath(bundle_path)).parent / "live"


def lock_live_directory(directory: Path, sharing: LogSharing | None = None):
    """Create and lock the live directory for one server (its workers included); returns the
    open lock file (closing it, or the process dying, releases the lock). In a worker
    (sharing.shared) the supervisor already holds the lock for all workers."""
    fresh = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    if fresh:
        fsync_dir(directory.parent)
    if (sharing or LogSharing.from_env()).shared:
        return _HeldBySupervisor()
    return _lock(directory)


class _HeldBySupervisor:
    """A worker's stand-in for the lock its supervisor holds for all workers."""

    def close(self) -> None:
        pass


def _lock(directory: Path):
    fh = open(directory / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise BundleError(f"live directory {directory} is in use by another recserve server") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh
