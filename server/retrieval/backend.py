"""The retrieval backend: what the retriever, the engine and live writes need of an item index,
and the one place where the served bundle's backend is chosen.

Two implementations: `hnsw` (server/retrieval/vector_index.py, in the bundle, the default)
satisfies `RetrievalBackend` as it is; `milvus` (server/retrieval/milvus_index.py) keeps the
ANN index in a Milvus collection and also satisfies `FilteringBackend`, so attribute filters
and exclusions are evaluated inside Milvus instead of by post-filtering.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from export.errors import BundleError
from export.settings import RecserveSettings, settings_config
from server.retrieval.filters import ItemFilter

HNSW = "hnsw"
MILVUS = "milvus"


@runtime_checkable
class RetrievalBackend(Protocol):
    """Item vectors by label: top-k search, exact scoring, live upserts and deletes."""

    dim: int
    vectors: np.ndarray  # float32 [labels, dim]: exact scoring, interests, ranking features
    present: np.ndarray  # bool [labels]: added and not deleted

    @property
    def size(self) -> int: ...

    @property
    def stored_count(self) -> int: ...

    @property
    def deleted_count(self) -> int: ...

    def load_parts(self, graph: Any, vectors: np.ndarray, present: np.ndarray) -> None: ...

    def knn(self, queries: np.ndarray, k: int, ef: int | None = None,
            threads: int = 1) -> tuple[np.ndarray, np.ndarray]: ...

    def exact(self, query: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None: ...

    def delete(self, labels: np.ndarray) -> None: ...


@runtime_checkable
class FilteringBackend(Protocol):
    """A backend that applies a request's ItemFilter itself (pushed down, not post-filtered)."""

    def search(self, query: np.ndarray, k: int, item_filter: ItemFilter) -> np.ndarray: ...


class BackendConfig(RecserveSettings):
    model_config = settings_config("backend")

    kind: Literal["hnsw", "milvus"] | None = None
    """Retrieval backend; None = the one the bundle was built for (manifest `retrieval`)."""
    milvus_uri: str = ""
    """Milvus server URI (http://host:19530); "" = the URI recorded in the bundle."""
    milvus_token: str = ""
    """Milvus credentials ("user:password" or an API key); "" = none."""
    milvus_ef: int = 0
    """HNSW search breadth inside Milvus; 0 = the bundle's measured ef."""


def retrieval_section(manifest: dict[str, Any]) -> dict[str, Any]:
    """The bundle's `retrieval` section ({"backend": "hnsw"} for bundles built before it)."""
    return manifest.get("retrieval") or {"backend": HNSW}


def open_backend(hnsw: Any, manifest: dict[str, Any], attributes: list[dict[str, str]],
                 config: BackendConfig | None = None) -> RetrievalBackend:
    """The served index: the bundle's hnswlib index, or a Milvus collection seeded from it.

    `hnsw` is the loaded VectorIndex (its dense vectors serve ranking either way);
    `attributes` is the live catalog's attribute list, read again at every upsert.
    """
    config = config or BackendConfig()
    section = retrieval_section(manifest)
    kind = config.kind or section.get("backend", HNSW)
    if kind == HNSW:
        return hnsw
    from export.milvus_collection import connect  # pymilvus only when used
    from server.retrieval.milvus_index import MilvusIndex

    uri = config.milvus_uri or section.get("uri") or ""
    ef = config.milvus_ef or int((manifest.get("index") or {}).get("ef", 64))
    collection = section.get("collection")
    if not collection:
        raise BundleError("this bundle was not loaded into Milvus: build it with --retrieval milvus")
    client = connect(uri, config.milvus_token)
    return MilvusIndex(client, collection, hnsw.vectors, hnsw.present, attributes, ef=ef)
