"""Helper processes the server starts (workers, the inference process, the admission proxy):
tied to their parent's life, and stopped the same way."""

from __future__ import annotations

import signal
import subprocess


def die_with_parent() -> None:
    """In the forked child before exec: SIGTERM it when the parent dies (even by SIGKILL), so no
    orphaned child keeps the port, the live log or a socket."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_child(process: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to timeout_s, then SIGKILL: every child is reaped."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
