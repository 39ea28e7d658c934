"""Compaction: when many items are deleted, rebuild a compact hnswlib index in the background.

hnswlib keeps traversing deleted items, so search gets slower and recall falls as deletes
pile up. The rebuild copies the live vectors (on the event loop, one numpy copy), builds a
new graph in a worker thread (hnswlib releases the GIL, so reads go on), and the writer
then catches up on the labels that writes changed meanwhile and swaps the graph in under
the index's write lock. Readers never wait for the build, only for the swap.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from export.hnsw_index import build_index
from server.live.config import LiveConfig
from server.live.live_state import LiveState
from server.served_bundle import INDEX_HEADROOM
from server.retrieval.vector_index import VectorIndex

log = logging.getLogger(__name__)


def compaction_due(index: VectorIndex, config: LiveConfig) -> bool:
    deleted = index.deleted_count
    stored = index.stored_count
    return deleted >= config.compaction_min_deleted and deleted > config.compaction_deleted_share * stored


class Compaction:
    """One background rebuild of a LiveState's index."""

    def __init__(self, live: LiveState) -> None:
        self.live = live
        index = live.overlay.index
        params = live.bundle.manifest.index
        self.labels = np.flatnonzero(index.present)
        vectors = index.vectors[self.labels].copy()
        self.dropped = index.deleted_count
        self.started = time.perf_counter()
        live.dirty_labels = set()  # the writer records what changes from here on
        self.task = asyncio.create_task(asyncio.to_thread(
            build_index, vectors, self.labels, m=params.m,
            ef_construction=params.ef_construction, threads=1,
            max_elements=int(len(self.labels) * INDEX_HEADROOM) + 16), name="recserve-compaction")

    def done(self) -> bool:
        return self.task.done()

    def cancel(self) -> None:
        self.task.cancel()
        self.live.dirty_labels = None

    def finish(self) -> bool:
        """Catch up and swap the new graph in (the writer calls this between writes)."""
        dirty, self.live.dirty_labels = self.live.dirty_labels or set(), None
        if self.task.cancelled() or self.task.exception() is not None:
            log.error("index compaction failed: %s", None if self.task.cancelled() else self.task.exception())
            return False
        graph = self.task.result()
        index = self.live.overlay.index
        changed = np.asarray(sorted(dirty), dtype=np.int64)
        if len(changed):
            added = changed[index.present[changed]]
            if len(added):
                needed = graph.get_current_count() + len(added)
                if needed > graph.get_max_elements():
                    graph.resize_index(int(needed * INDEX_HEADROOM) + 16)
                for label in added.tolist():
                    try:
                        graph.unmark_deleted(label)
                    except RuntimeError:
                        pass  # new to this graph
                graph.add_items(index.vectors[added], added, num_threads=1)
            for label in changed[~index.present[changed]].tolist():
                try:
                    graph.mark_deleted(label)
                except RuntimeError:
                    pass  # deleted before the rebuild started: not in this graph
        index.replace_graph(graph)
        log.info("index compacted: %d deleted items dropped, %d live, %d caught up, %.1fs",
                 self.dropped, index.size, len(changed), time.perf_counter() - self.started)
        return True
