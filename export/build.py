"""`build_bundle`: exported encoder + catalog (+ interactions) -> a complete, deployable bundle.

Steps, all inside a BundleWriter temp directory that is renamed into place at the end:
copy the encoder (model.onnx, tokenizer/) -> stream the catalog into the item store while
embedding each chunk with the serving batch plan -> HNSW index, ef chosen by measured
recall -> interaction feature tables -> manifest with checksums.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, \
    TextColumn, TimeElapsedColumn

from export.bundle import (FEATURES_DIR, INDEX_FILE, ITEMS_DB, MANIFEST, MODEL_FILE,
                           TOKENIZER_DIR, BundleWriter, new_version, verify_checksums)
from export.catalog import (CatalogColumns, InteractionColumns, ValidationReport, read_catalog,
                            read_interactions)
from export.embedding import embed_texts
from export.errors import InvalidInput
from export.features import compute_features
from export.hnsw_index import SPACE, build_index, choose_ef, save_index
from export.item_store import ItemRecord, ItemStore
from export.item_text import item_text, template_manifest
from export.model_files import copy_model, model_sha256
from export.runtime import EncoderRuntime, RuntimeConfig
from export.settings import RecserveSettings, load_settings, settings_config
from export.tabular import row_count_upper_bound
from export.tokenization import TextTokenizer

DEFAULT_MAX_LENGTH = 128


class BuildConfig(RecserveSettings):
    model_config = settings_config("build")

    m: int = 16
    """HNSW graph degree (M): higher = better recall, more memory per item."""
    ef_construction: int = 200
    """HNSW build-time search breadth: higher = better graph, slower build."""
    target_recall: float = 0.98
    """The default ef is the smallest reaching this recall@10 against exact search."""
    ef_sample: int = 1000
    """Items used as queries when measuring recall to choose ef."""
    max_length: int = 0
    """Token limit for item texts; 0 = the encoder manifest's, else 128."""
    text_attributes: list[str] | None = None
    """Attributes included in item texts; None = all (template in export/item_text.py)."""
    embed_chunk: int = 8192
    """Items read, stored and embedded per step (bounds memory while streaming)."""
    half_life_days: float = 30.0
    """Half-life of the time decay applied to item popularity."""
    top_n: int = 50
    """Co-occurrence neighbours kept per item."""
    neighbours: int = 40
    """Item-to-item and transition neighbours kept per item (6 bytes each, per table)."""
    knn_recent_items: int = 200
    """Item-to-item similarity counts each user's this-many most recent distinct items."""
    trending_half_life_days: float = 7.0
    """Half-life of the trending score ("popular this week")."""
    history_length: int = 50
    """Most recent items kept per user."""
    window: int = 5
    """Co-occurrence counts items up to this many positions apart in a user's sequence."""
    seed: int = 0
    """Seed for tie-breaking same-timestamp events and sampling recall queries."""
    strict: bool = False
    """Fail on the first bad catalog or interaction row instead of counting it."""
    threads: int = 1
    """Threads that build the HNSW graph. 1 (the default) makes the build reproducible: the
    same inputs give the same graph, so the same candidates and the same fitted ranker
    (two builds of the same Online Retail inputs: 49 and 44 trees with 2 threads, 53 and 53
    and byte-identical graphs with 1). More is faster on big catalogs (50k random vectors: 50 s on 1,
    21 s on 2 threads) but the graph then depends on thread timing; 0 = the usable CPUs."""
    retrieval: Literal["hnsw", "milvus"] = "hnsw"
    """Retrieval backend the bundle is served from; milvus also loads a collection at milvus_uri."""
    milvus_uri: str = ""
    """Milvus server the `milvus` backend loads the vectors into (and serving connects to)."""
    engine: Literal["local", "ray"] = "local"
    """Who embeds the catalog: this process, or a Ray Data actor pool (export/ray_embedding.py)."""
    ray_workers: int = 0
    """Ray actors embedding in parallel; 0 = one per GPU, else one per CPU of the cluster."""


def read_encoder(encoder_dir: str | Path, max_length: int = 0) -> tuple[dict[str, Any], int]:
    """The encoder's manifest section (verified when it lists checksums) and the max_length.

    Accepts an exported encoder folder (manifest.json + model.onnx + tokenizer/) or a bare
    one (model.onnx + tokenizer/ only).
    """
    root = Path(encoder_dir)
    if not (root / MODEL_FILE).is_file() or not (root / TOKENIZER_DIR / "tokenizer.json").is_file():
        raise InvalidInput(f"{root} is not an encoder folder: needs {MODEL_FILE} and "
                           f"{TOKENIZER_DIR}/tokenizer.json")
    section: dict[str, Any] = {}
    if (root / MANIFEST).is_file():
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{root / MANIFEST} is not valid JSON: {exc}") from exc
        if "files" in manifest:
            listed = [p for p in verify_checksums(root, manifest) if "not in manifest" not in p]
            if listed:
                raise InvalidInput(f"encoder {root} fails its checksums: " + "; ".join(listed[:5]))
        section = {k: v for k, v in manifest.items() if k != "files"}
    model = dict(section.get("model") or {})
    model.setdefault("source", str(root.resolve()))
    model.setdefault("sha256", model_sha256(root))
    model.setdefault("pooling", "unknown")
    max_length = max_length or int(model.get("max_length") or DEFAULT_MAX_LENGTH)
    model["max_length"] = max_length
    section["model"] = model
    section.setdefault("precision", None)
    section.setdefault("quantization", None)
    section.setdefault("verification", None)
    return section, max_length


def _chunks(records: Iterable[ItemRecord], size: int) -> Iterator[list[ItemRecord]]:
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def _embed_catalog(store: ItemStore, records: Iterable[ItemRecord], expected: int,
                   runtime: EncoderRuntime, tokenizer: TextTokenizer, config: BuildConfig,
                   progress: Progress, encoder_root: Path) -> np.ndarray:
    """Store and embed records chunk by chunk; [n, dim] vectors in label order.

    With engine "ray" the chunks are only stored here and every text is embedded at the end
    by a Ray actor pool (each actor loads the encoder from `encoder_root`)."""
    vectors = np.empty((expected, runtime.dim), dtype=np.float32)
    task = progress.add_task("embedding items", total=expected, rate="")
    done, started = 0, time.perf_counter()

    def advance(n: int) -> None:
        nonlocal done
        done += n
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(task, advance=n, rate=f"{rate:,.0f} items/s")

    pending: list[str] = []  # engine "ray": every text, embedded in one Ray job at the end
    for chunk in _chunks(records, config.embed_chunk):
        labels = store.add_items(chunk)
        if labels[-1] >= len(vectors):  # the row count was an upper bound, read just before
            raise InvalidInput("the catalog file grew while it was being read")
        texts = [item_text(r.title, r.text, r.attributes, include=config.text_attributes)
                 for r in chunk]
        if config.engine == "ray":
            pending.extend(texts)
            continue
        vectors[labels[0]:labels[-1] + 1] = embed_texts(runtime, tokenizer, texts,
                                                        on_batch=advance)
    if config.engine == "ray":
        from export.ray_embedding import embed_with_ray

        vectors[:len(pending)] = embed_with_ray(
            encoder_root / MODEL_FILE, encoder_root / TOKENIZER_DIR, tokenizer.max_length, pending,
            workers=config.ray_workers, on_batch=advance)
    progress.update(task, total=done)
    return vectors[:done]


def load_retrieval_backend(config: BuildConfig, version: str, vectors: np.ndarray,
                           attributes: list[dict[str, str]]) -> dict[str, Any]:
    """The manifest's `retrieval` section; for milvus, the collection is created and loaded first."""
    if config.retrieval == "hnsw":
        return {"backend": "hnsw"}
    from export.milvus_collection import collection_name, connect, create_collection

    name = collection_name(version)
    rows = create_collection(connect(config.milvus_uri), name, vectors, attributes,
                             m=config.m, ef_construction=config.ef_construction)
    return {"backend": "milvus", "uri": config.milvus_uri, "collection": name, "rows": rows}


def build_bundle(
    encoder_dir: str | Path,
    catalog_path: str | Path,
    interactions_path: str | Path | None,
    out_dir: str | Path,
    *,
    m: int | None = None,
    ef_construction: int | None = None,
    strict: bool | None = None,
    catalog_columns: CatalogColumns | None = None,
    interaction_columns: InteractionColumns | None = None,
    config: BuildConfig | None = None,
    runtime_config: RuntimeConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Build the bundle at out_dir and return its manifest (see module docstring).

    Explicit keyword values override `config` (default: BuildConfig from env/defaults).
    """
    config = config or load_settings(BuildConfig)
    changes = {"m": m, "ef_construction": ef_construction, "strict": strict, **overrides}
    config = config.model_copy(update={k: v for k, v in changes.items() if v is not None})
    started = time.perf_counter()
    encoder_section, max_length = read_encoder(encoder_dir, config.max_length)
    encoder_root = Path(encoder_dir)
    runtime = EncoderRuntime(encoder_root / MODEL_FILE, runtime_config)
    declared_dim = encoder_section["model"].get("dim")
    if declared_dim is not None and int(declared_dim) != runtime.dim:
        raise InvalidInput(f"encoder manifest says dim {declared_dim}, model outputs {runtime.dim}")
    encoder_section["model"]["dim"] = runtime.dim
    tokenizer = TextTokenizer(encoder_root / TOKENIZER_DIR, max_length)
    catalog_report = ValidationReport(str(catalog_path), strict=config.strict)
    expected = row_count_upper_bound(catalog_path)

    with BundleWriter(out_dir, overwrite=overwrite) as writer, _progress(progress) as bar:
        copy_model(encoder_root, writer.path)
        shutil.copytree(encoder_root / TOKENIZER_DIR, writer.path / TOKENIZER_DIR)
        store = ItemStore.create(writer.path / ITEMS_DB)
        try:
            t0 = time.perf_counter()
            vectors = _embed_catalog(
                store, read_catalog(catalog_path, catalog_columns, catalog_report),
                expected, runtime, tokenizer, config, bar, encoder_root)
            embed_seconds = time.perf_counter() - t0
            if len(vectors) == 0:
                raise InvalidInput(f"{catalog_path}: no valid items ({catalog_report.summary()})")
            catalog = store.catalog()
        finally:
            store.close()

        t0 = time.perf_counter()
        task = bar.add_task("building HNSW index", total=len(vectors), rate="")
        index = build_index(vectors, np.arange(len(vectors)), m=config.m,
                            ef_construction=config.ef_construction, threads=config.threads,
                            on_added=lambda n: bar.update(task, advance=n))
        index_seconds = time.perf_counter() - t0
        ef, recall = choose_ef(index, vectors, target_recall=config.target_recall,
                               sample=config.ef_sample, seed=config.seed)
        save_index(index, writer.path / INDEX_FILE)
        del index
        version = new_version()
        retrieval = load_retrieval_backend(config, version, vectors, catalog.attributes)

        interactions_report = None
        events: Iterable = ()
        if interactions_path is not None:
            interactions_report = ValidationReport(str(interactions_path), strict=config.strict)
            events = read_interactions(interactions_path, interaction_columns,
                                       interactions_report, known_items=catalog.label_of)
        t0 = time.perf_counter()
        features = compute_features(
            events, catalog, half_life_days=config.half_life_days, top_n=config.top_n,
            history_length=config.history_length, seed=config.seed, window=config.window,
            neighbours=config.neighbours, knn_recent_items=config.knn_recent_items,
            trending_half_life_days=config.trending_half_life_days)
        features_section = features.save(writer.path / FEATURES_DIR)
        features_section.update(dir=FEATURES_DIR, seconds=round(time.perf_counter() - t0, 3))

        manifest = {
            "version": version,
            "retrieval": retrieval,
            "encoder": encoder_section,
            "item_text": template_manifest(config.text_attributes),
            "items": {"count": len(vectors), "db": ITEMS_DB},
            "embedding": {
                "max_length": max_length, "dim": runtime.dim, "provider": runtime.provider,
                "seconds": round(embed_seconds, 3),
                "items_per_second": round(len(vectors) / max(embed_seconds, 1e-9), 1),
            },
            "index": {
                "file": INDEX_FILE, "space": SPACE, "m": config.m,
                "ef_construction": config.ef_construction, "ef": ef, "recall_at_10": round(recall, 4),
                "target_recall": config.target_recall,
                "recall_sample": min(config.ef_sample, len(vectors)),
                "build_seconds": round(index_seconds, 3), "dim": runtime.dim,
            },
            "features": features_section,
            "catalog_report": catalog_report.as_dict(),
            "interactions_report": interactions_report.as_dict() if interactions_report else None,
            "build": {"config": config.model_dump(mode="json"),
                      "seconds": round(time.perf_counter() - started, 3)},
        }
        return writer.commit(manifest)
