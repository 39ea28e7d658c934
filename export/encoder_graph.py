"""Encoder folder -> an ONNX graph that honours the encoder contract and that ORT can fuse.

Differences from `onnx_export.export_fp32` (the plain reference export), each for a reason:
- the model is traced with eager attention: the SDPA trace of recent transformers is a
  pattern ONNX Runtime's transformer optimizer does not recognise, so nothing would fuse;
- `ReduceL2` (sentence-transformers' Normalize) is spelled Sqrt(ReduceSum(x*x)): ORT's
  symbolic shape inference has no rule for it, and without shapes SkipLayerNormalization
  does not fuse;
- the output is declared `[batch_size, dim]`, so any ORT user sees the real dimension;
- a model that does not normalise its vectors gets an L2 normalisation appended.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from export.errors import InvalidInput
from export.onnx_export import (
    add_mean_pooling, copy_tokenizer, is_sentence_transformers_folder, keep_only_output,
)

OUTPUT = "sentence_embedding"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_SEQ2SEQ_OR_DECODER = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# RoBERTa-style position ids start after the padding index, so fewer positions are usable.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer"}
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class EncoderSource:
    """What the export needs to know about the source model folder."""

    path: Path
    library: str
    """"sentence_transformers" (modules.json present) or "transformers"."""
    model_type: str
    hidden_size: int
    num_heads: int
    pooling: str
    normalizes: bool
    """Whether the source model L2-normalises its vectors itself."""
    default_max_length: int
    max_length_limit: int


def _st_modules(path: Path) -> list[dict]:
    try:
        return json.loads((path / "modules.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}/modules.json is unreadable: {exc}") from exc


def _st_pooling(path: Path, modules: list[dict]) -> str:
    pooling = [m for m in modules if m.get("type", "").endswith("Pooling")]
    if not pooling:
        raise InvalidInput(f"{path} is a sentence-transformers folder without a Pooling module")
    config = _json(path / pooling[0]["path"] / "config.json")
    if "pooling_mode" in config:  # sentence-transformers >= 5: "cls" or ["mean", "max"]
        mode = config["pooling_mode"]
        return "+".join(mode) if isinstance(mode, list) else str(mode)
    modes = [name for key, name in _POOLING_KEYS.items() if config.get(key)]
    if not modes:
        raise InvalidInput(f"{path}: cannot tell the pooling mode from {pooling[0]['path']}/config.json")
    return "+".join(modes)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def inspect_encoder(path: Path) -> EncoderSource:
    """Read the folder's configs; InvalidInput when it is not a usable encoder."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path} has no usable model config: {first_line}") from exc
    model_type = config.model_type
    architectures = getattr(config, "architectures", None) or []
    if (config.is_encoder_decoder or getattr(config, "is_decoder", False)
            or any(a.endswith(_SEQ2SEQ_OR_DECODER) for a in architectures)
            or model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        raise InvalidInput(f"{path} holds a {model_type!r} model, not a text encoder")

    library = "sentence_transformers" if is_sentence_transformers_folder(path) else "transformers"
    if library == "sentence_transformers":
        modules = _st_modules(path)
        pooling = _st_pooling(path, modules)
        normalizes = any(m.get("type", "").endswith("Normalize") for m in modules)
        default_max = _json(path / "sentence_bert_config.json").get("max_seq_length")
    else:  # export_fp32's add_mean_pooling: masked mean, then L2 normalisation
        pooling, normalizes, default_max = "mean", True, None

    positions = int(getattr(config, "max_position_embeddings", 512))
    if model_type in _OFFSET_POSITIONS:
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    tokenizer_max = _json(path / "tokenizer_config.json").get("model_max_length")
    if not default_max and isinstance(tokenizer_max, int) and tokenizer_max < 100_000:
        default_max = tokenizer_max
    return EncoderSource(
        path=path, library=library, model_type=model_type,
        hidden_size=int(config.hidden_size), num_heads=int(config.num_attention_heads),
        pooling=pooling, normalizes=normalizes,
        default_max_length=min(int(default_max or positions), positions),
        max_length_limit=positions,
    )


def export_graph(source: EncoderSource, out_path: Path) -> int:
    """Write the contract-shaped fp32 graph to out_path; returns the embedding dimension."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.tasks import TasksManager

    try:
        model = TasksManager.get_model_from_task(
            "feature-extraction", str(source.path), library_name=source.library,
            framework="pt", device="cpu", attn_implementation="eager",
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(f"{source.path} could not be loaded as an encoder: {exc}") from exc
    if source.library == "sentence_transformers":
        dimension = getattr(model, "get_embedding_dimension", None)  # renamed in ST 5.x
        dim = int((dimension or model.get_sentence_embedding_dimension)())
    else:
        dim = source.hidden_size
    with tempfile.TemporaryDirectory() as raw, warnings.catch_warnings():
        # Tracing warns about Python-side branches (ST's Pooling checks the mask's shape);
        # the gate checks the traced graph on texts of every length, so the warning is noise.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        try:
            onnx_export_from_model(
                model, output=raw, task="feature-extraction",
                library_name=source.library, do_validation=False,
            )
        except (ValueError, KeyError) as exc:
            raise InvalidInput(f"{source.path} could not be exported as an encoder: {exc}") from exc
        raw_model = Path(raw) / "model.onnx"
        if source.library == "sentence_transformers":
            keep_only_output(raw_model, out_path, OUTPUT)
        else:
            add_mean_pooling(raw_model, out_path)
    finish_contract(out_path, dim, add_normalization=not source.normalizes)
    return dim


def _sum_of_squares_norm(x: str, axes: str, out: str, prefix: str, keepdims: int = 1) -> list:
    from onnx import helper

    return [
        helper.make_node("Mul", [x, x], [f"{prefix}_sq"], name=f"{prefix}_Square"),
        helper.make_node("ReduceSum", [f"{prefix}_sq", axes], [f"{prefix}_sumsq"],
                         name=f"{prefix}_SumSquares", keepdims=keepdims),
        helper.make_node("Sqrt", [f"{prefix}_sumsq"], [out], name=f"{prefix}_Sqrt"),
    ]


def finish_contract(path: Path, dim: int, *, add_normalization: bool) -> None:
    """Rewrite ReduceL2, optionally append L2 normalisation, declare the [batch, dim] output."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    nodes = []
    for node in graph.node:
        if node.op_type == "ReduceL2" and len(node.input) == 2:  # opset >= 18: axes as input
            keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
            nodes += _sum_of_squares_norm(node.input[0], node.input[1], node.output[0],
                                          node.name or "rs_l2", keepdims)
        else:
            nodes.append(node)
    if add_normalization:  # same as torch.nn.functional.normalize: x / max(||x||, 1e-12)
        for node in nodes:
            node.output[:] = ["rs_unnormalized" if o == OUTPUT else o for o in node.output]
        graph.initializer.extend([
            helper.make_tensor("rs_norm_axes", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("rs_norm_eps", TensorProto.FLOAT, [], [1e-12]),
        ])
        nodes += _sum_of_squares_norm("rs_unnormalized", "rs_norm_axes", "rs_norm", "rs_norm")
        nodes += [
            helper.make_node("Max", ["rs_norm", "rs_norm_eps"], ["rs_norm_safe"]),
            helper.make_node("Div", ["rs_unnormalized", "rs_norm_safe"], [OUTPUT]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch_size", dim]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_tokenizer(source: EncoderSource, out_dir: Path, max_length: int) -> None:
    """Copy the tokenizer and set its truncation to the export's max length.

    Shipped tokenizer.json files often carry their own truncation (and fixed padding) that
    differs from the model's max length; a user who loads only the bundle's tokenizer must
    get the same token ids the verification used.
    """
    from tokenizers import Tokenizer

    copy_tokenizer(source.path, out_dir)
    tokenizer_json = out_dir / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(max_length=max_length)
    padding = tokenizer.padding
    if padding is not None:  # pad to the longest text of a batch, not a fixed length
        tokenizer.enable_padding(pad_id=padding["pad_id"], pad_token=padding["pad_token"],
                                 pad_type_id=padding["pad_type_id"], direction=padding["direction"])
    tokenizer.save(str(tokenizer_json))
    config_path = out_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["model_max_length"] = max_length
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def weights_digest(path: Path) -> tuple[str, dict[str, str]]:
    """(sha256 of the weights, {file: sha256}): one file's own digest, or of the listing."""
    from export.bundle import sha256_file

    files = {
        p.relative_to(path).as_posix(): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and "tokenizer" not in p.name
    }
    if not files:
        raise InvalidInput(f"{path} has no model weights (*.safetensors or *.bin)")
    if len(files) == 1:
        return next(iter(files.values())), files
    listing = "".join(f"{digest}  {name}\n" for name, digest in files.items())
    return hashlib.sha256(listing.encode()).hexdigest(), files
