"""What the batcher drives: tokenize on the event loop, run padded batches on a worker thread.

`EncoderBackend` is the real one (bundle tokenizer + ONNX Runtime). Tests drive the batcher
with a fake that has the same three members and controls latency and failures.
"""

from __future__ import annotations

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
