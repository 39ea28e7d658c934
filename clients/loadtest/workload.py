"""Load-test workloads: weighted RecommendRequests, read from and written to JSONL.

File format (plain or .gz): one JSON object per line, a RecommendRequest in protobuf's JSON
mapping (`query`, `user_id`, `history`, `k`, `filter`, `diversity`, `explain`) plus an optional
`weight` (default 1). Requests are drawn with probability proportional to their weight.
Each request has a kind for the report: `text` (query only), `user` (user_id only),
`history` (history only) or `mixed` (more than one).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from google.protobuf import json_format

from protos import recommender_pb2 as pb

KINDS = ("text", "user", "history", "mixed")
DEFAULT_MIX = {"text": 0.5, "user": 0.25, "history": 0.25}
DEFAULT_WORKLOAD_FILE = "default_workload.jsonl.gz"


class WorkloadError(ValueError):
    """A workload file or mix that cannot be used."""


def request_kind(request: pb.RecommendRequest) -> str:
    present = [name for name, given in (("text", request.query), ("user", request.user_id),
                                        ("history", len(request.history))) if given]
    if not present:
        raise WorkloadError("a request needs at least one of query, user_id or history")
    return present[0] if len(present) == 1 else "mixed"


@dataclass(frozen=True)
class Workload:
    requests: tuple[pb.RecommendRequest, ...]
    weights: np.ndarray
    """Normalised draw probability of each request."""
    kinds: np.ndarray
    """int8 index into KINDS per request."""
    source: str
    """Where the workload came from, for the report."""

    @classmethod
    def of(cls, requests: list[pb.RecommendRequest], weights: list[float] | None = None,
           source: str = "") -> Workload:
        if not requests:
            raise WorkloadError("the workload has no requests")
        w = np.ones(len(requests)) if weights is None else np.asarray(weights, dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise WorkloadError("weights must be non-negative and not all zero")
        kinds = np.array([KINDS.index(request_kind(r)) for r in requests], dtype=np.int8)
        return cls(tuple(requests), w / w.sum(), kinds, source)

    def kind_shares(self) -> dict[str, float]:
        """Share of draws per kind (the mix)."""
        return {k: round(float(self.weights[self.kinds == i].sum()), 4)
                for i, k in enumerate(KINDS) if (self.kinds == i).any()}

    def with_mix(self, mix: Mapping[str, float]) -> Workload:
        """The same requests re-weighted so kinds are drawn in the `mix` proportions."""
        unknown = set(mix) - set(KINDS)
        if unknown:
            raise WorkloadError(f"unknown request kinds in mix: {sorted(unknown)}; known: {KINDS}")
        weights = np.zeros(len(self.requests))
        for i, kind in enumerate(KINDS):
            share = mix.get(kind, 0.0)
            members = self.kinds == i
            if share > 0 and not members.any():
                raise WorkloadError(f"mix asks for {kind!r} requests but the workload has none")
            if members.any():
                within = self.weights[members]
                weights[members] = share * within / within.sum()
        return Workload.of(list(self.requests), list(weights), f"{self.source} (mix {_mix_text(mix)})")

    def summary(self) -> dict:
        return {"source": self.source, "requests": len(self.requests), "mix": self.kind_shares()}

    def serialized(self) -> list[bytes]:
        """Requests as wire bytes: what worker processes receive."""
        return [r.SerializeToString() for r in self.requests]


def parse_mix(text: str) -> dict[str, float]:
    """'text=0.5,user=0.25,history=0.25' -> shares normalised to sum 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise WorkloadError(f"bad mix entry {part!r}; expected kind=share") from None
    total = sum(mix.values())
    if total <= 0 or any(v < 0 for v in mix.values()):
        raise WorkloadError(f"mix {text!r} needs non-negative shares with a positive sum")
    return {k: v / total for k, v in mix.items()}


def load_workload(path: str | Path) -> Workload:
    path = Path(path)
    if not path.exists():
        raise WorkloadError(f"workload file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    requests, weights = [], []
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                weights.append(float(entry.pop("weight", 1.0)))
                requests.append(json_format.ParseDict(entry, pb.RecommendRequest()))
            except (ValueError, json_format.ParseError) as exc:
                raise WorkloadError(f"{path}:{number}: {exc}") from None
    return Workload.of(requests, weights, str(path))


def save_workload(workload: Workload, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as out:
        for request, weight in zip(workload.requests, workload.weights):
            entry = json_format.MessageToDict(request, preserving_proto_field_name=True)
            entry["weight"] = float(f"{weight:.4g}")
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")


def default_workload() -> Workload:
    """The committed workload derived from Online Retail (see docs/LOADTEST.md)."""
    packaged = resources.files("clients.loadtest") / DEFAULT_WORKLOAD_FILE
    with resources.as_file(packaged) as path:
        workload = load_workload(path)
    return Workload(workload.requests, workload.weights, workload.kinds,
                    f"default ({DEFAULT_WORKLOAD_FILE}, Online Retail)")


def _mix_text(mix: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:.2f}" for k, v in mix.items())
