import numpy as np
import pytest
from tokenizers import Tokenizer

from export.onnx_export import default_model_path
from export.probes import MIN_PROBES, N_OVERLONG, build_probe_set


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def content_lengths(tokenizer, probes):
    return np.array([len(tokenizer.encode(p.text, add_special_tokens=False).ids) for p in probes])


def test_probe_set_has_every_kind_and_lengths_from_one_token_to_the_max(tokenizer):
    probes = build_probe_set(default_model_path(), max_length=256)
    assert len(probes) >= MIN_PROBES
    assert len({p.text for p in probes}) == len(probes)
    kinds = {p.kind for p in probes}
    assert kinds == {"product", "query", "description"}
    lengths = content_lengths(tokenizer, probes)
    assert lengths.min() == 1
    # Truncation is exercised: some texts are longer than the model's limit.
    assert (lengths + 2 > 256).sum() >= N_OVERLONG
    descriptions = content_lengths(tokenizer, [p for p in probes if p.kind == "description"])
    # Lengths spread over the whole range: every 10% band up to the max holds some texts.
    bands = np.histogram(np.minimum(descriptions, 254), bins=10, range=(12, 254))[0]
    assert bands.min() >= 10, bands


def test_probe_set_is_deterministic_and_follows_max_length(tokenizer):
    first = build_probe_set(default_model_path(), max_length=32)
    assert first == build_probe_set(default_model_path(), max_length=32)
    descriptions = [p for p in first if p.kind == "description"]
    lengths = content_lengths(tokenizer, descriptions)
    assert (lengths <= 30).sum() >= len(descriptions) - N_OVERLONG
    assert lengths.max() > 30
