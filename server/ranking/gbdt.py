"""The bundle's learned ranker: gradient-boosted trees exported to ONNX, scored by ONNX Runtime.

`recserve build` (with interactions) and `recserve train-ranker` fit a LightGBM model on the
server's own candidates and ship it as `ranker.onnx`; the manifest's "ranker" section names
the file, its sha256 and the feature columns it was fitted on, in order. Loading checks the
sha256 itself (a ranker is a model like the encoder: never run one that is not the one
fitted) and maps the fitted columns onto the server's feature matrix by name, so a bundle
whose features the server does not compute is refused instead of silently misread.

One ORT session, one thread, sequential execution: a few hundred rows through a few hundred
small trees is microseconds of work, and thread hand-offs would cost more than they save.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from export.bundle import sha256_file
from export.errors import BundleError

RANKER_FILE = "ranker.onnx"
RANKER_FORMAT = "onnx-tree-ensemble"
INPUT_NAME = "features"


@dataclass(frozen=True)
class RankerSection:
    """What the manifest says about the exported ranker (manifest["ranker"]["model"])."""

    file: str
    sha256: str
    features: tuple[str, ...]
    format: str = RANKER_FORMAT

    @classmethod
    def from_manifest(cls, section: Mapping[str, Any]) -> "RankerSection":
        try:
            return cls(file=str(section["file"]), sha256=str(section["sha256"]),
                       features=tuple(section["features"]),
                       format=str(section.get("format", RANKER_FORMAT)))
        except (KeyError, TypeError) as exc:
            raise BundleError(f"the manifest's ranker model section is incomplete: {exc}") from exc

    def as_manifest(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "features": list(self.features),
                "format": self.format}


class GBDTRanker:
    """Scores a [C, F] feature matrix (the server's FEATURE_NAMES columns) with the ONNX trees."""

    def __init__(self, model: bytes | str | Path, fitted_features: Sequence[str],
                 served_features: Sequence[str]) -> None:
        import onnxruntime as ort

        missing = [f for f in fitted_features if f not in served_features]
        if missing:
            raise BundleError(f"the ranker was fitted on features this server does not compute: "
                              f"{missing}")
        position = {name: i for i, name in enumerate(served_features)}
        self.fitted_features = tuple(fitted_features)
        self._columns = np.asarray([position[f] for f in fitted_features], dtype=np.int64)
        self._identity = list(fitted_features) == list(served_features)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        source = str(model) if isinstance(model, Path) else model
        try:
            self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for a corrupt or foreign file
            raise BundleError(f"the ranker model cannot be loaded: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] not in (len(fitted_features), None, "None"):
            raise BundleError("the ranker model's input does not match its feature list")
        self._input = inputs[0].name
        self._output = self._session.get_outputs()[0].name

    @classmethod
    def load(cls, bundle_dir: str | Path, section: Mapping[str, Any],
             served_features: Sequence[str]) -> "GBDTRanker":
        """The bundle's ranker after checking its sha256 against the manifest (BundleError)."""
        info = RankerSection.from_manifest(section)
        if info.format != RANKER_FORMAT:
            raise BundleError(f"unknown ranker format {info.format!r}")
        path = Path(bundle_dir) / info.file
        if not path.is_file():
            raise BundleError(f"{path}: the manifest names a ranker that is not in the bundle")
        actual = sha256_file(path)
        if actual != info.sha256:
            raise BundleError(f"{path}: sha256 {actual[:12]}... is not the manifest's "
                              f"{info.sha256[:12]}...; refusing a ranker that is not the fitted one")
        return cls(path.read_bytes(), info.features, served_features)

    def score(self, features: np.ndarray) -> np.ndarray:
        """[C] float32 ranking scores (higher first); an empty matrix gives an empty vector."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        x = features if self._identity else features[:, self._columns]
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._session.run([self._output], {self._input: x})[0].reshape(-1)
