"""Starts, watches and stops the shared inference process for the worker supervisor."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.workers.children import die_with_parent, stop_child

log = logging.getLogger(__name__)

ENV_SOCKET = "RECSERVE_RUNTIME_INFERENCE_SOCKET"  # RuntimeConfig.inference_socket of the workers


class InferenceLauncher:
    def __init__(self, threads: int, start_timeout_s: float = 60.0) -> None:
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="recserve-inference-"))
        self.socket_path = str(self._dir / "inference.sock")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait until its socket accepts (sessions load on the workers' hellos)."""
        env = {k: v for k, v in os.environ.items() if k != ENV_SOCKET}
        env["RECSERVE_RUNTIME_INTRA_OP_THREADS"] = str(self.threads)
        # No CPU arena unless asked for: it kept the warm-up's largest buffers, 140 of the
        # process's 280 MB with two workers (docs/BENCHMARKS.md); GPU memory is not affected.
        env.setdefault("RECSERVE_RUNTIME_CPU_MEM_ARENA", "false")
        Path(self.socket_path).unlink(missing_ok=True)
        self.process = subprocess.Popen([sys.executable, "-m", "server.inference", "--socket", self.socket_path],
                                        env=env, preexec_fn=die_with_parent)
        deadline = time.monotonic() + self.start_timeout_s
        while not os.path.exists(self.socket_path):
            if self.process.poll() is not None:
                raise RuntimeError(f"the inference process exited with {self.process.returncode} at start")
            if time.monotonic() > deadline:
                raise RuntimeError("the inference process did not listen in time")
            time.sleep(0.02)
        log.info("inference process started (pid %d, %d threads) on %s",
                 self.process.pid, self.threads, self.socket_path)

    def exited(self) -> int | None:
        """Its exit code once it has died, else None."""
        return self.process.poll() if self.process is not None else None

    def stop(self) -> None:
        stop_child(self.process)
        shutil.rmtree(self._dir, ignore_errors=True)
