"""Integration: a bundle from the real Online Retail demo sample and the tiny ONNX encoder."""

import gzip
import json
import shutil

import numpy as np
import pytest

from clients.cli import main as recserve
from export.build import build_bundle
from export.bundle import read_manifest, sha256_file
from export.catalog import ValidationReport, read_catalog
from export.demo import demo_catalog_path, demo_interactions_path
from export.embedding import embed_texts
from export.errors import InvalidInput
from export.features import InteractionFeatures
from export.hnsw_index import load_index
from export.item_store import ItemStore
from export.item_text import item_text
from export.runtime import EncoderRuntime
from export.tokenization import TextTokenizer


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The demo catalog (real data) plus a few bad rows; its interactions plus unknown items."""
    root = tmp_path_factory.mktemp("sample")
    lines = gzip.open(demo_catalog_path(), "rt").read().splitlines()
    catalog = root / "catalog.csv"
    catalog.write_text("\n".join(lines + [
        lines[1],                                          # duplicate item id
        "EMPTY1,,2011-01-01T00:00:00Z,1.00,1-2",           # no title, no text
        "BROKEN,only,three",                                # malformed
    ]) + "\n")
    events = gzip.open(demo_interactions_path(), "rt").read().splitlines()
    interactions = root / "interactions.csv"
    interactions.write_text("\n".join(events + [
        "12347,NOT-AN-ITEM,2011-12-09T12:00:00Z,purchase,1,999999",
        "12347,85123A,someday,purchase,1,999999",
    ]) + "\n")
    return catalog, interactions, len(lines) - 1, len(events) - 1


@pytest.fixture(scope="module")
def bundle(tiny_onnx_dir, sample, tmp_path_factory):
    catalog, interactions, _, _ = sample
    out = tmp_path_factory.mktemp("bundles") / "b1"
    manifest = build_bundle(tiny_onnx_dir, catalog, interactions, out, progress=False)
    return out, manifest


def test_manifest_describes_the_bundle(bundle, sample):
    out, manifest = bundle
    _, _, n_items, n_events = sample
    assert read_manifest(out) == manifest  # checksums verify
    assert manifest["items"] == {"count": n_items, "db": "items.sqlite"}
    encoder = manifest["encoder"]["model"]
    assert encoder["dim"] == 32 and encoder["max_length"] == 128
    assert encoder["sha256"] == sha256_file(out / "model.onnx")
    index = manifest["index"]
    assert {k: index[k] for k in ("file", "space", "m", "ef_construction", "dim")} == \
        {"file": "index.hnsw", "space": "ip", "m": 16, "ef_construction": 200, "dim": 32}
    assert index["ef"] >= 10 and index["build_seconds"] > 0
    assert index["recall_at_10"] >= 0.98 and index["recall_sample"] == 1000
    assert manifest["catalog_report"]["problems"] == {"duplicate_id": 1, "empty_text": 1,
                                                      "malformed": 1}
    assert manifest["interactions_report"]["problems"] == {"unknown_item": 1, "bad_timestamp": 1}
    assert manifest["features"]["counts"]["interactions"] == n_events
    assert set(manifest["files"]) >= {"model.onnx", "tokenizer/tokenizer.json", "index.hnsw",
                                      "items.sqlite", "features/popularity.npy",
                                      "features/cooccurrence.npz"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["b1"]  # no temp dir left
    assert not list(out.glob("*-wal")) and not list(out.glob("*-shm"))


def test_labels_vectors_and_items_agree_and_recall_holds(bundle, tiny_onnx_dir):
    out, manifest = bundle
    with ItemStore.open(out / "items.sqlite", readonly=True) as store:
        catalog = store.catalog()
        texts = [item_text(title, text, attrs) for _, title, text, attrs in store.texts()]
    expected_ids = [i.item_id for i in read_catalog(demo_catalog_path())]
    assert catalog.item_ids == expected_ids  # label = position in the catalog file
    assert catalog.titles[catalog.label_of["85123A"]] == "WHITE HANGING HEART T-LIGHT HOLDER"
    runtime = EncoderRuntime(tiny_onnx_dir / "model.onnx")
    vectors = embed_texts(runtime, TextTokenizer(tiny_onnx_dir / "tokenizer", 128), texts)
    index = load_index(out / "index.hnsw", dim=32, ef=manifest["index"]["ef"])
    np.testing.assert_allclose(index.get_items(np.arange(len(vectors))), vectors, atol=1e-5)
    # independent recall@10 on 500 items (not the build's sample), own item not counted
    rng = np.random.default_rng(123)
    picked = rng.choice(len(vectors), 500, replace=False)
    scores = vectors[picked] @ vectors.T
    scores[np.arange(500), picked] = -np.inf
    truth = np.argsort(-scores, axis=1)[:, :10]
    found, _ = index.knn_query(vectors[picked], k=11)
    found = [[label for label in row if label != own][:10] for row, own in zip(found, picked)]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.95


def test_feature_tables_load_and_make_sense(bundle):
    out, _ = bundle
    features = InteractionFeatures.load(out / "features")
    with ItemStore.open(out / "items.sqlite", readonly=True) as store:
        catalog = store.catalog()
    assert features.popularity.max() == 1.0 and len(features.popularity) == len(catalog)
    most_bought = catalog.item_ids[int(features.popularity_count.argmax())]
    assert most_bought == "85123A"  # the white hanging heart, as in the full data
    assert features.cooccurrence.shape == (len(catalog), len(catalog))
    assert np.diff(features.cooccurrence.indptr).max() <= 50
    assert len(features.user_history) == 1000
    assert features.attribute_vocab["price_band"][0] in {"1-2", "under 1", "2-5"}
    assert "price" not in features.attribute_vocab


def test_inspect_passes_then_fails_on_a_tampered_file(bundle, tmp_path, capsys):
    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert recserve(["inspect", str(copy)]) == 0
    assert "all" in capsys.readouterr().err
    with open(copy / "items.sqlite", "r+b") as fh:  # flip one byte
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert recserve(["inspect", str(copy)]) == 1
    assert "items.sqlite: sha256 mismatch" in capsys.readouterr().err
    (copy / "features" / "popularity.npy").unlink()
    (copy / "extra.bin").write_bytes(b"x")
    assert recserve(["inspect", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "features/popularity.npy: missing" in err and "extra.bin: not in manifest" in err
    assert recserve(["inspect", str(tmp_path)]) == 2  # not a bundle


def test_strict_build_fails_and_leaves_nothing(tiny_onnx_dir, sample, tmp_path):
    catalog, interactions, _, _ = sample
    with pytest.raises(InvalidInput, match="duplicate_id"):
        build_bundle(tiny_onnx_dir, catalog, interactions, tmp_path / "b", strict=True,
                     progress=False)
    assert list(tmp_path.iterdir()) == []


def exported_encoder(tiny_onnx_dir, root, **model):
    """A copy of the tiny encoder with the manifest an exported encoder folder carries."""
    encoder = root / "encoder"
    shutil.copytree(tiny_onnx_dir, encoder)
    files = {p.relative_to(encoder).as_posix(): sha256_file(p)
             for p in sorted(encoder.rglob("*")) if p.is_file()}
    manifest = {"model": {"source": "tiny", "sha256": "abc", "pooling": "mean", "dim": 32,
                          "max_length": 64, **model},
                "precision": "fp32", "quantization": None, "verification": {"passed": True},
                "format_version": 1, "version": "enc-1", "files": files}
    (encoder / "manifest.json").write_text(json.dumps(manifest))
    return encoder


def test_cli_build_with_exported_encoder_and_mapped_jsonl_catalog(tiny_onnx_dir, tmp_path, capsys):
    encoder = exported_encoder(tiny_onnx_dir, tmp_path)
    items = list(read_catalog(demo_catalog_path(), report=ValidationReport("demo")))[:300]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"sku": i.item_id, "name": i.title, **i.attributes})
                               + "\n" for i in items))
    out = tmp_path / "bundle"
    assert recserve(["build", "--encoder", str(encoder), "--catalog", str(catalog),
                     "--catalog-columns", "item_id=sku,title=name", "--out", str(out),
                     "--m", "8", "--ef-construction", "64", "--quiet"]) == 0
    manifest = read_manifest(out)
    assert manifest["encoder"]["precision"] == "fp32"
    assert manifest["encoder"]["model"]["pooling"] == "mean"
    assert manifest["encoder"]["model"]["max_length"] == 64  # taken from the encoder manifest
    assert manifest["embedding"]["max_length"] == 64
    assert manifest["index"]["m"] == 8 and manifest["index"]["ef_construction"] == 64
    assert manifest["items"]["count"] == 300 and manifest["interactions_report"] is None
    assert manifest["features"]["counts"]["interactions"] == 0
    assert "manifest.json" not in manifest["files"]  # the encoder's manifest is folded in
    # an existing output is refused; a tampered or mismatched encoder is refused
    assert recserve(["build", "--encoder", str(encoder), "--catalog", str(catalog),
                     "--catalog-columns", "item_id=sku,title=name", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    with open(encoder / "tokenizer" / "vocab.txt", "a") as fh:
        fh.write("tampered\n")
    with pytest.raises(InvalidInput, match="fails its checksums"):
        build_bundle(encoder, catalog, None, tmp_path / "b2", progress=False)
    wrong_dim = exported_encoder(tiny_onnx_dir, tmp_path / "w", dim=384)
    with pytest.raises(InvalidInput, match="dim 384"):
        build_bundle(wrong_dim, catalog, None, tmp_path / "b3", progress=False)


def test_catalog_without_valid_items_is_an_error(tiny_onnx_dir, tmp_path):
    catalog = tmp_path / "empty.csv"
    catalog.write_text("item_id,title\n,no id\n")
    with pytest.raises(InvalidInput, match="no valid items"):
        build_bundle(tiny_onnx_dir, catalog, None, tmp_path / "b", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]


def test_an_encoder_with_external_weights_is_built_with_them(tiny_onnx_dir, tmp_path):
    """Both files reach the bundle, checksummed, and the items embed as with inline weights."""
    from export.model_files import MODEL_DATA_FILE, externalize_weights, model_sha256

    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_onnx_dir, encoder)
    externalize_weights(encoder / "model.onnx")
    assert model_sha256(encoder) != model_sha256(tiny_onnx_dir) == sha256_file(tiny_onnx_dir / "model.onnx")
    catalog = tmp_path / "catalog.csv"
    items = list(read_catalog(demo_catalog_path(), report=ValidationReport("demo")))[:50]
    catalog.write_text("item_id,title\n" + "".join(f"{i.item_id},{i.title}\n" for i in items))
    build_bundle(encoder, catalog, None, tmp_path / "bundle", progress=False)
    manifest = read_manifest(tmp_path / "bundle")  # every file's sha256 checked
    assert MODEL_DATA_FILE in manifest["files"]
    assert manifest["encoder"]["model"]["sha256"] == model_sha256(encoder)
    texts = [item_text(i.title, "", {}) for i in items]
    inline = embed_texts(EncoderRuntime(tiny_onnx_dir / "model.onnx"),
                         TextTokenizer(tiny_onnx_dir / "tokenizer", 128), texts)
    index = load_index(tmp_path / "bundle" / "index.hnsw", dim=32, ef=manifest["index"]["ef"])
    np.testing.assert_allclose(index.get_items(np.arange(len(items))), inline, atol=1e-6)
