"""The wire between a serving worker and the inference process (a unix socket + shared memory).

Token ids and embeddings never cross the socket: each worker owns one memfd region that both
processes map. The socket carries fixed-size doorbells only:

- hello (worker -> inference, once): a JSON line naming the model; the answer is a JSON line
  with dim, provider, threads and the model's input names, or an error;
- request: `<batch, seq_len>`, optionally with a new region's fd (SCM_RIGHTS) when the
  worker grew it; the inputs lie in the region in `input_names` order, int64 [batch, seq_len]
  each, and the embeddings [batch, dim] float32 are written right after them;
- answer: `<status, length>` then `length` bytes of error text (0 bytes when status is OK).
"""

from __future__ import annotations

import socket
import struct

import numpy as np

REQUEST = struct.Struct("<II")  # batch, seq_len
ANSWER = struct.Struct("<II")  # status (0 = OK), error text length
OK, FAILED = 0, 1
ALIGN = 64


def output_offset(n_inputs: int, batch: int, seq_len: int) -> int:
    """Where the embeddings start in the region: after the inputs, cache-line aligned."""
    size = n_inputs * batch * seq_len * 8
    return -(-size // ALIGN) * ALIGN


def region_bytes(n_inputs: int, batch: int, seq_len: int, dim: int) -> int:
    return output_offset(n_inputs, batch, seq_len) + batch * dim * 4


def input_views(region: memoryview, names: list[str], batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """The inputs as arrays over the region (no copy)."""
    step = batch * seq_len
    flat = np.frombuffer(region, dtype=np.int64, count=len(names) * step)
    return {name: flat[i * step:(i + 1) * step].reshape(batch, seq_len) for i, name in enumerate(names)}


def output_view(region: memoryview, n_inputs: int, batch: int, seq_len: int, dim: int) -> np.ndarray:
    return np.frombuffer(region, dtype=np.float32, count=batch * dim,
                         offset=output_offset(n_inputs, batch, seq_len)).reshape(batch, dim)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the inference connection closed")
        data += chunk
    return bytes(data)


def recv_line(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the inference connection closed")
        data += chunk
        if len(data) > limit:
            raise ConnectionError("hello line too long")
    return bytes(data)
