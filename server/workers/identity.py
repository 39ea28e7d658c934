"""Which serving process this is: the id put in every response's timings."""

from __future__ import annotations

import os

from server.live.log_sharing import LogSharing


def worker_id() -> str:
    """`w<index>-<pid>`: the supervisor's worker number and this process's pid (read at start-up)."""
    return f"w{LogSharing.from_env().index}-{os.getpid()}"


def worker_prefix() -> str:
    """How a serving process names itself in its start-up line: `recserve` alone, or
    `recserve worker <i>` under a supervisor (whose own line is the one that means ready)."""
    sharing = LogSharing.from_env()
    return f"recserve worker {sharing.index}" if sharing.shared else "recserve"
