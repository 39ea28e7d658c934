"""`recserve serve` as a real child process, for tests that need signals, ports and start-up."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

SERVING_LINE = re.compile(r"serving bundle \S+ on [\d.]+:(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """The process, with its output collected on a thread (so the pipe never fills)."""

    def __init__(self, bundle: Path, live_dir: Path, *args: str, port: int = 0,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        self.announced = False  # the serving line was seen
        command = [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host",
                   "127.0.0.1", "--port", str(port), "--metrics-port", "-1", "--live-dir", str(live_dir),
                   "--log-level", "INFO", *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        self.lines: list[str] = []
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            match = SERVING_LINE.search(line)
            if match and line.startswith("recserve:"):
                self.port = int(match.group(1))
                self.announced = True
                self._serving.set()
        self._serving.set()

    def wait_serving(self, timeout: float = 120) -> int:
        """The port once the process says it serves; fails with its output if it exited first."""
        self._serving.wait(timeout)
        if self.announced:
            return self.port
        try:  # no serving line: its output ended (it is exiting) or it is still starting
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"not serving after {timeout:.0f} s:\n{self.output}") from None
        raise AssertionError(f"server exited (rc={code}):\n{self.output}")

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(5)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
