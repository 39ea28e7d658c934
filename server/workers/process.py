"""ServerProcess: `recserve serve` as a child process (tests, crash harness, benchmarks).

Starts the command with its output in a log file, waits for the line the server prints once
it serves ("recserve: serving bundle ... on HOST:PORT"), and returns the port, so callers
can bind port 0 and still know where to connect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

READY_LINE = "recserve: serving bundle"


class ServerProcess:
    def __init__(self, bundle: Path, live_dir: Path, log_path: Path, env: dict | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.bundle, self.live_dir, self.log_path = bundle, live_dir, log_path
        self.env = env or {}
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(self.bundle),
                "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
                "--live-dir", str(self.live_dir), "--log-level", "INFO", *self.extra_args]

    def start(self, timeout_s: float = 120.0) -> tuple[subprocess.Popen, int, float]:
        """Start and wait until it serves: (process, port, seconds it took)."""
        started = time.perf_counter()
        self.log_path.touch()
        offset = self.log_path.stat().st_size
        with open(self.log_path, "a") as log:
            process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1", **self.env},
                cwd=Path(__file__).resolve().parents[2],
                start_new_session=True)  # its own process group: kill() takes its workers too
        self.process = process
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path) as fh:
                fh.seek(offset)
                for line in fh:
                    if READY_LINE in line:
                        self.port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
                        return process, self.port, time.perf_counter() - started
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}; see {self.log_path}")
            time.sleep(0.05)
        process.kill()
        raise RuntimeError(f"server did not start in {timeout_s}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL to the whole process group (a machine crash): nothing flushed, nothing drains."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def worker_pids(self) -> list[int]:
        """Pids of the supervisor's worker processes (empty for a single-process server)."""
        if self.process is None:
            return []
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
