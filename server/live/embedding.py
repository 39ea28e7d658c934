"""Embedding live items through the serving batcher, in slices its admission queue accepts."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import numpy as np

from server.errors import Overloaded
from server.serving_state import ServingState

EMBED_SLICE = 32  # texts per embed call: well inside the batcher's admission queue
Embed = Callable[[list[str]], Awaitable[np.ndarray]]


def embedder(serving: ServingState, patience_s: float = 60.0) -> Embed:
    """Embedding for replays and re-embeds (a reload, a start): waits for room in the
    admission queue instead of failing the whole replay when requests fill it."""
    async def embed(texts: list[str]) -> np.ndarray:
        vectors = []
        for i in range(0, len(texts), EMBED_SLICE):
            give_up = time.monotonic() + patience_s
            while True:
                try:
                    vectors.append((await serving.batcher.embed(texts[i:i + EMBED_SLICE], cache=False))[0])
                    break
                except Overloaded:
                    if time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.02)
        return np.concatenate(vectors)
    return embed
