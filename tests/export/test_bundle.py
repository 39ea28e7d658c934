import json

import pytest

from export.bundle import BundleWriter, read_manifest, verify_checksums
from export.errors import BundleError, InvalidInput


def test_bundle_is_written_atomically_and_verified(tmp_path):
    dest = tmp_path / "b1"
    with BundleWriter(dest) as writer:
        (writer.path / "model.onnx").write_bytes(b"abc")
        (writer.path / "sub").mkdir()
        (writer.path / "sub" / "x.bin").write_bytes(b"xyz")
        assert not dest.exists()
        writer.commit({"item_count": 2})
    manifest = read_manifest(dest)
    assert manifest["item_count"] == 2
    assert set(manifest["files"]) == {"model.onnx", "sub/x.bin"}
    assert [p.name for p in tmp_path.iterdir()] == ["b1"]
    assert dest.stat().st_mode & 0o777 == 0o755  # readable by a server running as another user


def test_tampered_or_unknown_bundle_is_refused(tmp_path):
    dest = tmp_path / "b"
    with BundleWriter(dest) as writer:
        (writer.path / "model.onnx").write_bytes(b"abc")
        writer.commit({})
    (dest / "model.onnx").write_bytes(b"abd")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        read_manifest(dest)
    assert verify_checksums(dest, json.loads((dest / "manifest.json").read_text()))
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["format_version"] = 999
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format"):
        read_manifest(dest, verify=False)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with BundleWriter(tmp_path / "b") as writer:
            (writer.path / "model.onnx").write_bytes(b"abc")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_non_empty_output_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("x")
    with pytest.raises(InvalidInput):
        BundleWriter(tmp_path / "b")


def test_typed_manifest_reads_sections_and_keeps_the_raw_json(tmp_path):
    from export.bundle import load_manifest

    dest = tmp_path / "typed"
    with BundleWriter(dest) as writer:
        writer.commit({"index": {"ef": 48, "m": 8, "recall_at_10": 0.99},
                       "features": {"parameters": {"history_length": 20, "top_n": 5}},
                       "retrieval": {"backend": "hnsw"}})
    manifest = load_manifest(dest)
    assert manifest.index.ef == 48 and manifest.features.parameters.history_length == 20
    assert manifest.ranker is None and manifest.encoder.model.max_length == 256  # defaults
    assert manifest.get("retrieval") == {"backend": "hnsw"} and "index" in manifest
    assert manifest["index"]["recall_at_10"] == 0.99  # untyped keys stay readable


def test_writer_refuses_a_manifest_the_server_cannot_read(tmp_path):
    with pytest.raises(BundleError, match="manifest does not match"):
        with BundleWriter(tmp_path / "bad") as writer:
            writer.commit({"index": {"ef": "many"}})
    assert not (tmp_path / "bad").exists()
