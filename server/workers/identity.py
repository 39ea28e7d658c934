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


ENV_JOIN_LATE = "RECSERVE_WORKER_JOIN_LATE"
ENV_PUBLIC_ADDRESS = "RECSERVE_WORKER_PUBLIC_ADDRESS"


def supervisor_proxy_address() -> str | None:
    """Where callers connect when the supervisor's admission proxy forwards to this worker's
    loopback port (protected mode is judged by it; the worker runs no proxy of its own), else None."""
    return os.environ.get(ENV_PUBLIC_ADDRESS) or None


def joins_port_late() -> bool:
    """A replacement worker (the others serve already) binds the shared port only once it
    serves: bound while loading, it would take connections from the serving workers and
    answer them UNAVAILABLE. At the server's start every worker binds at once and answers
    NOT_SERVING until it is ready, like a single process."""
    return os.environ.get(ENV_JOIN_LATE) == "1"
