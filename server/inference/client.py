"""RemoteEncoderRuntime: the EncoderRuntime interface, run by the shared inference process.

The batcher calls `run(feeds)` from its inference thread as it would a local session. The
padded inputs are written into this worker's memfd region, a doorbell goes over the unix
socket, and the embeddings are read back from the region. The region grows (a new memfd,
passed with the request) when a batch does not fit. If the inference process is gone, one
reconnect is tried (the supervisor restarts it); otherwise the call fails like a failed
local run, and the batcher's health probes bring the backend back once it answers again.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

from export.errors import BundleError
from server.inference import protocol as wire


class RemoteEncoderRuntime:
    def __init__(self, socket_path: str, model_path: str | Path, quantization: dict | None = None,
                 connect_timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.model_path = str(model_path)
        self.quantization = quantization
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._region: mmap.mmap | None = None
        self._region_fd: int | None = None
        self._region_sent = False
        self._connect()

    # The EncoderRuntime surface the server reads.
    dim: int
    provider: str
    threads: int
    input_names: list[str]

    def _connect(self) -> None:
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise BundleError(f"no inference process answers at {self.socket_path}") from None
                time.sleep(0.05)
        sock.sendall(json.dumps({"model": self.model_path, "quantization": self.quantization}).encode() + b"\n")
        answer = json.loads(wire.recv_line(sock))
        if "error" in answer:
            sock.close()
            raise BundleError(f"the inference process could not load {self.model_path}: {answer['error']}")
        self.dim, self.provider = int(answer["dim"]), f"{answer['provider']} (shared)"
        self.threads, self.input_names = int(answer["threads"]), list(answer["input_names"])
        self._sock, self._region_sent = sock, False

    def _ensure_region(self, size: int) -> None:
        if self._region is not None and len(self._region) >= size:
            return
        size = max(size, 2 * len(self._region) if self._region is not None else 1 << 20)
        self.close_region()
        fd = os.memfd_create("recserve-inference", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        self._region, self._region_fd, self._region_sent = mmap.mmap(fd, size), fd, False

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings for one padded batch; extra feed keys the model lacks are ignored."""
        with self._lock:
            try:
                return self._run(feeds)
            except (ConnectionError, BrokenPipeError, OSError):
                self._reconnect()  # the inference process was restarted: one more try
                return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        batch, seq_len = feeds[self.input_names[0]].shape
        n = len(self.input_names)
        self._ensure_region(wire.region_bytes(n, batch, seq_len, self.dim))
        region = memoryview(self._region)
        for view, name in zip(wire.input_views(region, self.input_names, batch, seq_len).values(), self.input_names):
            view[:] = feeds[name]
        header = wire.REQUEST.pack(batch, seq_len)
        if self._region_sent:
            self._sock.sendall(header)
        else:
            socket.send_fds(self._sock, [header], [self._region_fd])
            self._region_sent = True
        status, length = wire.ANSWER.unpack(wire.recv_exact(self._sock, wire.ANSWER.size))
        if status != wire.OK:
            raise RuntimeError(f"inference failed: {wire.recv_exact(self._sock, length).decode(errors='replace')}")
        return wire.output_view(region, n, batch, seq_len, self.dim).copy()

    def _reconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._connect()  # a fresh connection needs the region again (sent with the next request)

    def release_memory(self) -> None:
        """Nothing to release here: the session and its buffers live in the inference process."""

    def close_region(self) -> None:
        if self._region is not None:
            self._region.close()
            os.close(self._region_fd)
        self._region = self._region_fd = None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self.close_region()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
