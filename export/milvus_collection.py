"""A Milvus collection of a bundle's items: name, connection, schema and the bulk load at build time.

Written by `recserve build --retrieval milvus` and read by server/retrieval/milvus_index.py.
Rows are (id = label, vector, attrs JSON); one collection per bundle version, so a new
release never changes what the serving version searches.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import numpy as np

from export.errors import BundleError

ID, VECTOR, ATTRS = "id", "vector", "attrs"
INSERT_BATCH = 2000


def collection_name(bundle_version: str) -> str:
    """Milvus collection for a bundle version (names allow letters, digits and '_')."""
    return "recserve_" + re.sub(r"[^0-9A-Za-z_]", "_", bundle_version)


def connect(uri: str, token: str = "") -> Any:
    """A MilvusClient for `uri`; BundleError when there is no URI or no server there."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if not uri:
        raise BundleError("the milvus retrieval backend needs a URI (bundle or RECSERVE_BACKEND_MILVUS_URI)")
    try:
        # CI once failed every connect after a Milvus Lite server sent GOAWAY "too_many_pings":
        # pymilvus pings every 10 s, also on idle channels, and its reconnects (we believe; not
        # reproduced here) reused gRPC's process-wide subchannel that kept the GOAWAY status. So
        # ping only during calls, and give each channel its own subchannels.
        return MilvusClient(uri=uri, token=token, timeout=30,
                            grpc_options={"grpc.keepalive_permit_without_calls": 0,
                                          "grpc.use_local_subchannel_pool": 1})
    except MilvusException as exc:
        raise BundleError(f"cannot connect to Milvus at {uri}: {exc.message}") from exc


def item_rows(vectors: np.ndarray, labels: np.ndarray, attributes: list[dict[str, str]]) -> list[dict]:
    return [{ID: int(label), VECTOR: vector.tolist(), ATTRS: dict(attributes[int(label)])}
            for label, vector in zip(labels, vectors)]


def batches(labels: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(labels), size):
        yield labels[start:start + size]


def create_collection(client: Any, name: str, vectors: np.ndarray, attributes: list[dict[str, str]],
                      *, m: int, ef_construction: int, overwrite: bool = False) -> int:
    """Create collection `name` (HNSW, inner product) holding every item; returns rows written."""
    from pymilvus import DataType, MilvusClient

    if client.has_collection(name):
        if not overwrite:
            raise BundleError(f"Milvus collection {name} already exists")
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
    schema.add_field(ATTRS, DataType.JSON)
    index = client.prepare_index_params()
    index.add_index(field_name=VECTOR, index_type="HNSW", metric_type="IP",
                    params={"M": m, "efConstruction": ef_construction})
    # Strong: a write acknowledged by one replica is searchable from every other at once.
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    labels = np.arange(len(vectors), dtype=np.int64)
    for batch in batches(labels, INSERT_BATCH):
        client.insert(name, item_rows(vectors[batch], batch, attributes))
    client.flush(name)  # seal the inserted rows so the server indexes them (not a scan)
    client.load_collection(name)
    return len(labels)
