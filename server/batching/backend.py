"""What the batcher drives: tokenize on the event loop, run padded batches on a worker thread.

`EncoderBackend` is the real one (bundle tokenizer + ONNX Runtime). Tests drive the batcher
with a fake that has the same three members and controls latency and failures.
"""

from __future__ import annotations

import os
import time
from typing import Protocol, Sequence

import numpy as np

from export.runtime import EncoderRuntime
from export.tokenization import TextTokenizer, pad_batch


class Backend(Protocol):
    dim: int

    def tokenize(self, text: str) -> np.ndarray:
        """Token ids (int64, unpadded) for one text."""

    def infer(self, token_ids: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
        """[len(token_ids), dim] float32 L2-normalised embeddings; runs on the worker thread."""


class EncoderBackend:
    """The bundle's tokenizer and ONNX Runtime session behind the batcher."""

    def __init__(self, tokenizer: TextTokenizer, runtime: EncoderRuntime) -> None:
        self.tokenizer = tokenizer
        self.runtime = runtime
        self.dim = runtime.dim

    def tokenize(self, text: str) -> np.ndarray:
        return self.tokenizer.encode([text])[0]

    def infer(self, token_ids: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
        return self.runtime.run(pad_batch(token_ids, seq_len, self.tokenizer.pad_id))

    def release_memory(self) -> None:
        """The session's idle buffers back to the OS (a no-op for the shared inference process)."""
        self.runtime.release_memory()


class FaultInjectingBackend:
    """Fault injection (BatcherConfig.fault_file): while the file exists inference hangs, or
    fails at once when the file says `fail`. Lets drills and tests kill the backend for real."""

    def __init__(self, backend: Backend, fault_file: str) -> None:
        self.backend, self.fault_file, self.dim = backend, fault_file, backend.dim

    def tokenize(self, text: str) -> np.ndarray:
        return self.backend.tokenize(text)

    def infer(self, token_ids: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
        while os.path.exists(self.fault_file):
            try:
                with open(self.fault_file) as fh:
                    if fh.read().strip() == "fail":
                        raise RuntimeError("injected inference failure")
            except FileNotFoundError:
                break
            time.sleep(0.01)
        return self.backend.infer(token_ids, seq_len)

    def __getattr__(self, name: str):  # runtime, tokenizer, ...: the real backend's
        return getattr(self.backend, name)


def with_faults(backend: Backend, fault_file: str) -> Backend:
    return FaultInjectingBackend(backend, fault_file) if fault_file else backend
