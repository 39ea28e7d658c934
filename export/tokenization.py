"""Tokenizing texts and padding them into model inputs, the same way at build and serve time.

Uses the fast `tokenizers` library directly (no transformers import on the serving path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from export.errors import BundleError

# Sequence-length buckets: ORT's arena grows to the largest shape seen, and padding to a
# few fixed lengths keeps both memory and the number of distinct shapes small.
DEFAULT_BUCKETS = (8, 16, 32, 64, 128, 256, 512)


class TextTokenizer:
    """Texts -> token id arrays (truncated to max_length, unpadded)."""

    def __init__(self, tokenizer_dir: str | Path, max_length: int) -> None:
        path = Path(tokenizer_dir) / "tokenizer.json"
        if not path.is_file():
            raise BundleError(f"no tokenizer.json in {tokenizer_dir}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self.max_length = max_length
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text (int64), special tokens included."""
        encodings = self._tokenizer.encode_batch(list(texts))
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


def bucket_length(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket that holds `length` tokens (the largest bucket if none does)."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    return buckets[-1]


def pad_batch(
    token_ids: Sequence[np.ndarray], seq_len: int, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """Right-pad to seq_len: input_ids, attention_mask, token_type_ids (all int64)."""
    batch = len(token_ids)
    input_ids = np.full((batch, seq_len), pad_id, dtype=np.int64)
    attention_mask = np.zeros((batch, seq_len), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        n = min(len(ids), seq_len)
        input_ids[row, :n] = ids[:n]
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64),
    }


def plan_batches(
    lengths: Sequence[int],
    max_batch_tokens: int,
    max_batch_size: int,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
) -> list[tuple[list[int], int]]:
    """Group positions into length-sorted batches: [(positions, padded_seq_len), ...].

    Each batch holds texts of one length bucket, at most max_batch_size of them and at most
    max_batch_tokens padded tokens (always at least one text).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches: list[tuple[list[int], int]] = []
    current: list[int] = []
    current_len = 0
    for pos in order.tolist():
        seq_len = bucket_length(lengths[pos], buckets)
        if current and (
            seq_len != current_len
            or len(current) + 1 > max_batch_size
            or (len(current) + 1) * seq_len > max_batch_tokens
        ):
            batches.append((current, current_len))
            current = []
        current.append(pos)
        current_len = seq_len
    if current:
        batches.append((current, current_len))
    return batches
