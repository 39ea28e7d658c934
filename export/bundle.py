"""The bundle: an immutable, versioned directory with manifest.json and checksummed files.

Layout (paths relative to the bundle directory):

    manifest.json           format version, provenance, parameters, sha256 of every file
    model.onnx              the encoder (contract: see DESIGN.md, "The ONNX encoder")
    model.onnx.data         its weights as ONNX external data (export/model_files.py), when
                            exported by this version; older bundles keep them inline
    tokenizer/              tokenizer.json and friends, as the source model ships them
    index.hnsw              hnswlib index over item embeddings (inner product)
    items.sqlite            item store: id <-> label, title, attributes, timestamps
    features/               interaction feature tables (formats described in the manifest)
    history_adapter.npy     [d, d] float32 map of history interests (train/history_adapter.py),
                            when fitted; ranker.onnx the learned ranker, when fitted

A bundle is written to a temporary sibling directory and renamed into place at the end
(`BundleWriter`), and never modified afterwards. `read_manifest` refuses a bundle whose
format version is unknown or whose files do not match their checksums; `load_manifest`
returns it as the typed `Manifest` the server reads (the one contract between build and
serve: the sections it types are the ones serving depends on).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from export.errors import BundleError, InvalidInput

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_DIR = "tokenizer"
INDEX_FILE = "index.hnsw"
ITEMS_DB = "items.sqlite"
FEATURES_DIR = "features"
HISTORY_ADAPTER_FILE = "history_adapter.npy"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root except the manifest, keyed by posix relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def new_version(now: dt.datetime | None = None) -> str:
    """A sortable, unique-enough bundle version: UTC timestamp plus random suffix."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file in it) survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(root)


class BundleWriter:
    """Write a bundle (or the encoder part of one) atomically.

    Use as a context manager: files go into `writer.path` (a temporary sibling of the
    destination); `commit(manifest)` adds checksums and format version, fsyncs, and renames
    the directory into place. On an exception, or without commit, the temporary directory is
    removed so nothing that looks deployable is left behind.
    """

    def __init__(self, destination: str | Path, *, overwrite: bool = False) -> None:
        self.destination = Path(destination).resolve()
        if self.destination.exists() and not overwrite:
            if not self.destination.is_dir() or any(self.destination.iterdir()):
                raise InvalidInput(f"output {self.destination} already exists and is not empty")
        parent = self.destination.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.destination.name}.tmp-", dir=parent))
        except OSError as exc:
            raise InvalidInput(f"cannot write under {parent}: {exc.strerror}") from exc
        self.overwrite = overwrite
        self._committed = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Finish the bundle: checksums + manifest, fsync, atomic rename. Returns the manifest."""
        manifest = dict(manifest)
        manifest["format_version"] = FORMAT_VERSION
        manifest.setdefault("version", new_version())
        manifest.setdefault("created_at", dt.datetime.now(dt.timezone.utc).isoformat())
        manifest["files"] = file_checksums(self.path)
        Manifest.from_json(manifest)  # the server's contract: refuse to write what it cannot read
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # mkdtemp made the directory 0700; a bundle is read by servers running as other users.
        os.chmod(self.path, 0o755)
        _fsync_tree(self.path)
        if self.destination.exists():
            if not self.overwrite and any(self.destination.iterdir()):
                raise InvalidInput(f"output {self.destination} appeared while writing")
            shutil.rmtree(self.destination)
        os.rename(self.path, self.destination)
        self._committed = True
        return manifest


def read_manifest(bundle_dir: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The bundle's manifest; with verify, every file's sha256 and the format are checked."""
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{root}: bundle format {manifest.get('format_version')!r} is not the supported "
            f"format {FORMAT_VERSION}"
        )
    if verify:
        problems = verify_checksums(root, manifest)
        if problems:
            raise BundleError(f"{root}: checksum verification failed: " + "; ".join(problems[:5]))
    return manifest


def verify_checksums(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Human-readable problems (missing, changed or unlisted files); empty when all match."""
    expected: dict[str, str] = manifest.get("files", {})
    actual = file_checksums(root)
    problems = [f"{name}: missing" for name in expected if name not in actual]
    problems += [
        f"{name}: sha256 mismatch" for name, digest in expected.items()
        if name in actual and actual[name] != digest
    ]
    problems += [f"{name}: not in manifest" for name in actual if name not in expected]
    return problems


# ---- the typed manifest ----------------------------------------------------------------------


class _Section(BaseModel):
    """A manifest section: typed fields serving reads, other recorded keys kept as they are."""

    model_config = ConfigDict(extra="allow", frozen=True)


class EncoderModel(_Section):
    source: str = ""
    sha256: str = ""
    pooling: str = "unknown"
    max_length: int = 256
    dim: int | None = None


class EncoderSection(_Section):
    model: EncoderModel = EncoderModel()
    precision: str | None = None
    quantization: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None


class IndexSection(_Section):
    file: str = INDEX_FILE
    ef: int = 64
    m: int = 16
    ef_construction: int = 200
    dim: int | None = None


class FeatureParameters(_Section):
    history_length: int = 50
    """Most recent items kept per user; the server uses this many of a request's history."""
    event_weights: dict[str, float] = {}
    """The event-weight table the build used (export.features.EVENT_WEIGHTS)."""
    window: int = 5
    neighbours: int = 0
    """Item-to-item and transition neighbours kept per item (0: a bundle without them)."""
    trending_half_life_days: float = 7.0


class FeaturesSection(_Section):
    format: int = 1
    reference_time: float = 0.0
    half_life_days: float = 30.0
    parameters: FeatureParameters = FeatureParameters()
    counts: dict[str, Any] = {}


class RankerManifest(_Section):
    """Learned ranking: linear weights (train-ranker) and/or an exported model (`model`,
    server/ranking/gbdt.py's RankerSection)."""

    weights: dict[str, float] | None = None
    model: dict[str, Any] | None = None


class HistoryAdapterSection(_Section):
    """The learned map of history interests (train/history_adapter.py); `file` is absent when
    the fit did not beat the identity (recorded, not served)."""

    file: str | None = None


class Manifest(_Section):
    """The bundle's manifest.json, typed. It also reads as a mapping of the raw JSON
    (`get`, `[]`, `in`, `keys`, `items`), for readers of sections not typed here."""

    format_version: int
    version: str = ""
    created_at: str = ""
    encoder: EncoderSection = EncoderSection()
    index: IndexSection = IndexSection()
    features: FeaturesSection = FeaturesSection()
    ranker: RankerManifest | None = None
    history_adapter: HistoryAdapterSection | None = None
    item_text: dict[str, Any] | None = None
    build: dict[str, Any] = {}
    """How the bundle was built (`seconds` the build took, ...)."""
    live_sequence: int | None = None
    """The write-ahead log sequence the catalog was exported at (release pipeline), if any."""
    files: dict[str, str] = {}
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Manifest":
        try:
            manifest = cls.model_validate(raw)
        except ValueError as exc:
            raise BundleError(f"the manifest does not match the bundle format: {exc}") from exc
        manifest._raw = raw
        return manifest

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    def get(self, key: str, default: Any = None) -> Any:
        return self._raw.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def keys(self):
        return self._raw.keys()

    def items(self):
        return self._raw.items()


def load_manifest(bundle_dir: str | Path, *, verify: bool = True) -> Manifest:
    """The bundle's typed manifest (read_manifest's checks first)."""
    return Manifest.from_json(read_manifest(bundle_dir, verify=verify))
