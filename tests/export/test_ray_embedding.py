"""`recserve build --engine ray` writes the local build's bundle: same items, same vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.hnsw_index import load_index

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if not ray.is_initialized():  # one local Ray per test session (ray shuts it down at exit):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a second init is slow
    yield


def _vectors(bundle) -> np.ndarray:
    manifest = json.loads((bundle / "manifest.json").read_text())
    n, dim = manifest["items"]["count"], manifest["embedding"]["dim"]
    return np.asarray(load_index(bundle / "index.hnsw", dim=dim, ef=10).get_items(np.arange(n)), np.float32)


def test_ray_build_vectors_equal_the_local_build(local_ray, tiny_onnx_dir, tmp_path):
    from clients.cli import main
    from export.demo import demo_catalog_path, demo_interactions_path
    from tests.server.conftest import _take_sample

    catalog, _ = _take_sample(demo_catalog_path(), demo_interactions_path(), tmp_path / "data",
                              n_items=600)
    common = ["build", "--encoder", str(tiny_onnx_dir), "--catalog", str(catalog), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "local")]) == 0
    assert main(common + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-workers", "2"]) == 0
    local, ray_built = _vectors(tmp_path / "local"), _vectors(tmp_path / "ray")
    assert local.shape == ray_built.shape == (600, local.shape[1])
    np.testing.assert_allclose(ray_built, local, atol=1e-6, rtol=0)
    manifests = [json.loads((tmp_path / b / "manifest.json").read_text()) for b in ("local", "ray")]
    assert manifests[1]["build"]["config"]["engine"] == "ray"
    assert manifests[0]["items"] == manifests[1]["items"]
