"""One log, many appliers: the pieces that let several serving processes share one live log.

- `LogSharing`: how many serving processes apply this log and which one this is (set by the
  worker supervisor through the environment; a plain `recserve serve` is process 0 of 1).
- `WriterLock`: an exclusive flock on `WRITER.lock` in the live directory, held while a
  process catches up with the log, checks, appends and applies a group of writes, so writes
  from any worker are serialized and checked against the state every earlier write left. The
  kernel drops it when the holder dies (kill -9 included).
- `LogNotifier`: after a commit, a datagram with the new sequence to every sibling's
  abstract UNIX socket (no files to clean up, no path length limit); a sibling wakes up and
  applies the log at once instead of polling. A lost datagram costs only latency: appliers
  also poll the log's last sequence now and then (LiveConfig.applier_poll_interval_s).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ENV_INDEX, ENV_COUNT = "RECSERVE_WORKER_INDEX", "RECSERVE_WORKER_COUNT"
_SEQ = struct.Struct("!q")


@dataclass(frozen=True)
class LogSharing:
    index: int = 0
    """This process's worker number (0-based); worker 0 takes the snapshots."""
    count: int = 1
    """Serving processes that apply the same log."""

    @property
    def shared(self) -> bool:
        return self.count > 1

    @property
    def takes_snapshots(self) -> bool:
        """One process snapshots and truncates the log (the others only read it)."""
        return self.index == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "LogSharing":
        """Read at start-up: the supervisor sets RECSERVE_WORKER_INDEX / _COUNT for each worker."""
        env = os.environ if environ is None else environ
        return cls(int(env.get(ENV_INDEX, "0")), max(1, int(env.get(ENV_COUNT, "1"))))


class WriterLock:
    FILE = "WRITER.lock"

    def __init__(self, directory: Path) -> None:
        self._fh = open(directory / self.FILE, "a+")

    async def acquire(self) -> None:
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker is committing: wait off the event loop
            await asyncio.to_thread(fcntl.flock, self._fh, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)

    def close(self) -> None:
        self._fh.close()


def _address(directory: Path, index: int) -> str:
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:20]
    return f"\0recserve-log-{key}-{index}"


class LogNotifier:
    """Datagrams between the appliers of one log (Linux abstract socket namespace)."""

    def __init__(self, directory: Path, sharing: LogSharing) -> None:
        self.sharing = sharing
        self._peers = [_address(directory, i) for i in range(sharing.count) if i != sharing.index]
        self._sock: socket.socket | None = None
        self._send: socket.socket | None = None
        if sharing.shared:
            self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._send.setblocking(False)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            try:
                self._sock.bind(_address(directory, sharing.index))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                # A previous incarnation of this worker still exits: take the name once it is free.
                self._sock.close()
                self._sock = None

    def start(self, on_sequence: Callable[[int], None]) -> None:
        """Call on_sequence(newest announced seq) on the running loop when siblings commit."""
        if self._sock is None:
            return

        def readable() -> None:
            newest = 0
            while True:
                try:
                    data = self._sock.recv(64)
                except (BlockingIOError, InterruptedError):
                    break
                if len(data) == _SEQ.size:
                    newest = max(newest, _SEQ.unpack(data)[0])
            if newest:
                on_sequence(newest)

        asyncio.get_running_loop().add_reader(self._sock.fileno(), readable)

    def notify(self, seq: int) -> None:
        """Tell every sibling that the log now reaches seq (best effort, never blocks)."""
        if self._send is None:
            return
        data = _SEQ.pack(seq)
        for peer in self._peers:
            try:
                self._send.sendto(data, peer)
            except OSError:
                pass  # not started, restarting or its buffer is full: it polls as well

    def close(self) -> None:
        if self._send is not None:
            self._send.close()
            self._send = None
        if self._sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            except RuntimeError:
                pass
            self._sock.close()
            self._sock = None
