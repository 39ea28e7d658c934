"""Encoder throughput: PyTorch fp32 against the ONNX exports, side by side in one run.

    python bench/encoder.py                     # export (cached in bench/out/encoder), measure
    python bench/encoder.py --threads 1 --repeat 7 --texts 256

Engines: sentence-transformers on PyTorch fp32; ORT on the plain fp32 export
(export_fp32, what optimum gives any user); ORT on the fused fp32 export; ORT on the int8
export; and, as a diagnostic, int8 exported without ORT's transformer fusions. All ORT
exports but the plain one come from `export_encoder`, so they passed the gate; its
figures are reported with the results. Text sets: short (product names and queries,
<= 16 tokens) and medium (descriptions, 17..64 tokens). Each engine encodes the same
texts in arrival order, in batches of 1, 8, 32 and 64, through the serving runtime
(EncoderRuntime), tokenization included, padded to the longest text of the batch.
Engines take turns inside every repeat, so machine noise hits them alike; the figure is
the median sentences/s over --repeat runs.

Writes docs/benchmarks/encoder-<N>thread-results.json and encoder-<N>thread.png, and
prints the markdown table for docs/benchmarks/encoder.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from export.cpus import usable_cpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "docs" / "benchmarks"
BATCH_SIZES = (1, 8, 32, 64)
ENGINES = ("pytorch-fp32", "ort-fp32", "ort-fused-fp32", "ort-int8")
# Diagnostic beside the four: int8 exported without ORT's transformer fusions.
EXTRA = ("ort-int8-unfused",)


def machine() -> dict:
    from export.precision import cpu_flags, detect_int8_target

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "int8_family": detect_int8_target(cpu_flags()),
            "usable_cpus": usable_cpus(), "python": platform.python_version()}


def prepare_models(work: Path) -> dict[str, Path]:
    """The three ONNX models, exported once and reused from work/ on later runs."""
    from export.encoder_export import export_encoder
    from export.onnx_export import default_model_path, export_fp32

    paths = {}
    plain = work / "plain-fp32"
    if not (plain / "model.onnx").is_file():
        plain.mkdir(parents=True, exist_ok=True)
        export_fp32(default_model_path(), plain)
    paths["ort-fp32"] = plain
    for engine, precision, fuse in (("ort-fused-fp32", "fp32", True), ("ort-int8", "int8", True),
                                    ("ort-int8-unfused", "int8", False)):
        bundle = work / (precision if fuse else f"{precision}-unfused")
        if not (bundle / "manifest.json").is_file():
            export_encoder("default", bundle, precision=precision, fuse=fuse)
        paths[engine] = bundle
    return paths


def text_sets(tokenizer_dir: Path, n: int) -> dict[str, list[str]]:
    """Short (<= 16 tokens) and medium (17..64 tokens) texts, n of each, fixed order."""
    from tokenizers import Tokenizer

    from export.probes import compose_descriptions, load_seed_texts

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    length = lambda text: len(tokenizer.encode(text).ids)  # noqa: E731 (specials included)
    short = [p.text for p in load_seed_texts() if length(p.text) <= 16]
    names = [p.text for p in load_seed_texts() if p.kind == "product"]
    medium: list[str] = []
    seed = 0
    while len(medium) < n:
        medium += [p.text for p in compose_descriptions(tokenizer, names, 64, seed=seed)
                   if 16 < length(p.text) <= 64]
        seed += 1
    rng = np.random.default_rng(0)
    return {"short": [short[i] for i in rng.permutation(len(short))[:n]],
            "medium": [medium[i] for i in rng.permutation(len(medium))[:n]]}


def make_encoders(paths: dict[str, Path], threads: int) -> dict:
    """engine -> encode(list of texts) -> [n, 384] vectors, tokenization included."""
    import torch
    from sentence_transformers import SentenceTransformer

    from export.onnx_export import default_model_path
    from export.runtime import EncoderRuntime, RuntimeConfig
    from export.tokenization import TextTokenizer, pad_batch

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    model.max_seq_length = 256
    encoders = {"pytorch-fp32": lambda texts: model.encode(texts, batch_size=len(texts))}
    for engine, folder in paths.items():
        manifest = folder / "manifest.json"
        quantization = json.loads(manifest.read_text())["quantization"] if manifest.is_file() else None
        runtime = EncoderRuntime(folder / "model.onnx", quantization=quantization,
                                 config=RuntimeConfig(provider="cpu", intra_op_threads=threads))
        tokenizer = TextTokenizer(folder / "tokenizer", 256)

        def encode(texts, runtime=runtime, tokenizer=tokenizer):
            ids = tokenizer.encode(texts)
            return runtime.run(pad_batch(ids, max(len(t) for t in ids), tokenizer.pad_id))

        encoders[engine] = encode
    return encoders


def throughput(encode, texts: list[str], batch: int) -> float:
    """Sentences per second encoding texts in consecutive batches."""
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        encode(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start)


def measure(encoders: dict, sets: dict[str, list[str]], repeat: int) -> list[dict]:
    from rich.progress import Progress

    rows = []
    with Progress() as progress:
        task = progress.add_task("measuring", total=len(sets) * len(BATCH_SIZES) * (repeat + 1))
        for set_name, texts in sets.items():
            for batch in BATCH_SIZES:
                runs: dict[str, list[float]] = {engine: [] for engine in encoders}
                for r in range(repeat + 1):  # the first round warms up and is dropped
                    for engine, encode in encoders.items():
                        value = throughput(encode, texts, batch)
                        if r:
                            runs[engine].append(value)
                    progress.advance(task)
                base = statistics.median(runs["pytorch-fp32"])
                for engine, values in runs.items():
                    rows.append({"texts": set_name, "batch": batch, "engine": engine,
                                 "sentences_per_s": statistics.median(values),
                                 "vs_pytorch": statistics.median(values) / base,
                                 "runs": values})
    return rows


def markdown(rows: list[dict]) -> str:
    engines = ENGINES + EXTRA
    lines = ["| texts | batch | " + " | ".join(engines) + " | int8 / PyTorch |",
             "|---|---:|" + "---:|" * (len(engines) + 1)]
    for set_name in ("short", "medium"):
        for batch in BATCH_SIZES:
            cell = {r["engine"]: r for r in rows if r["texts"] == set_name and r["batch"] == batch}
            values = " | ".join(f"{cell[e]['sentences_per_s']:.0f}" for e in engines)
            lines.append(f"| {set_name} | {batch} | {values} | {cell['ort-int8']['vs_pytorch']:.2f}x |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, set_name in zip(axes, ("short", "medium")):
        engines = ENGINES + EXTRA
        width = 0.8 / len(engines)
        for k, engine in enumerate(engines):
            values = [next(r["sentences_per_s"] for r in rows if r["texts"] == set_name
                           and r["batch"] == b and r["engine"] == engine) for b in BATCH_SIZES]
            offset = (k - (len(engines) - 1) / 2) * width
            ax.bar(np.arange(len(BATCH_SIZES)) + offset, values, width, label=engine)
        ax.set_xticks(range(len(BATCH_SIZES)), [f"batch {b}" for b in BATCH_SIZES])
        ax.set_title(f"{set_name} texts")
        ax.set_ylabel("sentences / s")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per cell (median)")
    parser.add_argument("--texts", type=int, default=256, help="texts per set")
    parser.add_argument("--threads", type=int, default=usable_cpus(),
                        help="PyTorch threads and ORT intra-op threads (default: usable CPUs)")
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "encoder"),
                        help="where the exports are kept between runs")
    args = parser.parse_args()

    paths = prepare_models(Path(args.work))
    gates = {e: json.loads((paths[e] / "manifest.json").read_text())["verification"]
             for e in ("ort-fused-fp32", "ort-int8", "ort-int8-unfused")}
    sets = text_sets(paths["ort-int8"] / "tokenizer", args.texts)
    rows = measure(make_encoders(paths, args.threads), sets, args.repeat)
    result = {
        "command": "python bench/encoder.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "threads": args.threads, "repeat": args.repeat,
        "texts_per_set": args.texts, "load_average": os.getloadavg(),
        "gate": {e: {k: g[k] for k in ("mean_cosine", "p1_cosine", "max_abs_diff",
                                        "overlap_at_10", "probes", "passed")}
                 for e, g in gates.items()},
        "rows": rows,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"encoder-{args.threads}thread"
    (RESULTS_DIR / f"{stem}-results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, RESULTS_DIR / f"{stem}.png", f"all-MiniLM-L6-v2 throughput, {args.threads} thread(s)")
    print(json.dumps({k: result[k] for k in ("command", "machine", "gate")}, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
