"""The probe set the verification gate compares exported encoders on.

Three kinds of text, as a recommender sees them: short product names (real gift-ware
names from the UCI Online Retail data, CC BY 4.0, Chen, Sain & Guo 2012), short search
queries (one word and up), and longer product descriptions. Names and queries ship with
the package (`probe_texts.jsonl.gz`); descriptions are composed here, deterministically,
so that their token lengths spread evenly from a dozen tokens to the export's max length,
plus a few longer ones that exercise truncation. The set does not depend on the model
beyond its tokenizer, so every export of one model is verified on the same texts.

Regenerate the shipped file with `python -m export.probes ONLINE_RETAIL_CSV_GZ`.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

SEED_FILE = Path(__file__).with_name("probe_texts.jsonl.gz")
MIN_PROBES = 1000

# Descriptions per export; with the shipped names and queries the set holds ~1,250 texts.
N_DESCRIPTIONS = 240
N_OVERLONG = 8

_COLOURS = ("red", "ivory", "pink", "sky blue", "sage green", "black", "gold", "pastel")
_MATERIALS = ("enamel", "glass", "ceramic", "recycled paper", "zinc", "wood", "cotton", "tin")
_OCCASIONS = (
    "birthdays", "Christmas", "a housewarming", "Mother's Day", "weddings", "a new baby",
    "Easter", "a retirement", "teachers at the end of term",
)
_SENTENCES = (
    "{name} in {colour} {material}.",
    "A lovely gift for {occasion}, sold in packs of {n}.",
    "Measures {n} x {m} cm and weighs about {w} g.",
    "Pairs well with our {other} for a matching look.",
    "Designed in our London studio and finished by hand, so each piece differs slightly.",
    "Wipe clean with a damp cloth; not suitable for the dishwasher.",
    "Customers who bought this also liked the {other}.",
    "Part of the {colour} collection, back by popular demand for {occasion}.",
    "Ships flat-packed within {n} working days; gift wrapping is available at checkout.",
    "Not a toy: contains small parts and is not suitable for children under {n} years.",
)


@dataclass(frozen=True)
class Probe:
    """One probe text and its kind: "product", "query" or "description"."""

    kind: str
    text: str


def load_seed_texts(path: Path = SEED_FILE) -> list[Probe]:
    """The shipped product names and queries."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [Probe(**json.loads(line)) for line in fh if line.strip()]


def _token_count(tokenizer: Tokenizer, text: str) -> int:
    """Content tokens (special tokens excluded), untruncated."""
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _description_words(rng: random.Random, names: list[str]) -> list[str]:
    """A long run of description sentences about one product, split into words."""
    name = rng.choice(names).capitalize()
    sentences = []
    for template in [t for _ in range(6) for t in rng.sample(_SENTENCES, len(_SENTENCES))]:
        sentences.append(template.format(
            name=name, colour=rng.choice(_COLOURS), material=rng.choice(_MATERIALS),
            occasion=rng.choice(_OCCASIONS), other=rng.choice(names).lower(),
            n=rng.randint(2, 12), m=rng.randint(5, 40), w=rng.randint(50, 900),
        ))
    return " ".join(sentences).split()


def _fit_to_length(tokenizer: Tokenizer, words: list[str], target: int) -> str:
    """The longest prefix of words whose content-token count is at most target (>= 1 word)."""
    lo, hi = 1, len(words)
    while lo < hi:  # binary search on the number of words
        mid = (lo + hi + 1) // 2
        if _token_count(tokenizer, " ".join(words[:mid])) <= target:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def compose_descriptions(
    tokenizer: Tokenizer, names: list[str], max_length: int, *, seed: int = 0
) -> list[Probe]:
    """Descriptions whose lengths spread from ~12 tokens to max_length, plus a few longer."""
    rng = random.Random(seed)
    content_max = max(1, max_length - 2)  # room for [CLS]/[SEP]-style specials
    low = min(12, content_max)
    targets = [
        round(low + (content_max - low) * i / (N_DESCRIPTIONS - 1)) for i in range(N_DESCRIPTIONS)
    ]
    targets += [round(content_max * (1.2 + 0.1 * i)) for i in range(N_OVERLONG)]
    probes = []
    for target in targets:
        words = _description_words(rng, names)
        while _token_count(tokenizer, " ".join(words)) < target:
            words += _description_words(rng, names)
        probes.append(Probe("description", _fit_to_length(tokenizer, words, target)))
    return probes


def build_probe_set(tokenizer_dir: str | Path, max_length: int, *, seed: int = 0) -> list[Probe]:
    """The full, de-duplicated probe set for an export with this tokenizer and max length."""
    tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    seeds = load_seed_texts()
    names = [p.text for p in seeds if p.kind == "product"]
    probes, seen = [], set()
    for probe in seeds + compose_descriptions(tokenizer, names, max_length, seed=seed):
        if probe.text not in seen:
            seen.add(probe.text)
            probes.append(probe)
    if len(probes) < MIN_PROBES:  # guards the shipped file, not user input
        raise RuntimeError(f"probe set has {len(probes)} texts, fewer than {MIN_PROBES}")
    return probes


# --- regenerating the shipped seed file -------------------------------------------------

_NOT_PRODUCTS = {"POSTAGE", "DOTCOM POSTAGE", "CARRIAGE", "MANUAL", "DISCOUNT", "SAMPLES",
                 "AMAZON FEE", "BANK CHARGES", "CRUK COMMISSION", "ADJUST BAD DEBT"}
_QUERIES = (
    "mug", "red", "a", "tea", "gift", "candle", "bunting", "lunch bag", "cake stand",
    "gift for mum", "vintage christmas decorations", "something red for the kitchen",
    "present for a 5 year old", "wedding favours under £2", "heart shaped", "doormat",
    "retro spot", "jam jar", "fairy lights for the garden", "easter eggs to hang",
    "café crème", "naïve folk art", "日本の茶碗", "🎄 tree ornament", "12", "!!!",
    "paper chain kit", "hot water bottle", "childrens apron", "alarm clock bakelike",
    "storage tin", "popcorn holder", "glass star", "photo frame", "pencils", "doily",
)


def _is_product_name(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return (len(text) >= 4 and text.upper() not in _NOT_PRODUCTS
            and sum(c.isupper() for c in letters) >= 0.6 * max(1, len(letters)))


def write_seed_file(online_retail_csv: Path, out: Path = SEED_FILE, *, seed: int = 0) -> int:
    """Sample product names and derive short queries from the Online Retail descriptions."""
    with gzip.open(online_retail_csv, "rt", encoding="utf-8") as fh:
        names = sorted({" ".join(r["Description"].split()) for r in csv.DictReader(fh)})
    names = [n for n in names if _is_product_name(n)]
    rng = random.Random(seed)
    rng.shuffle(names)
    products, rest = names[:720], names[720:]
    queries = list(_QUERIES)
    for name in rest[:260]:  # fragments of other names, as people type them
        words = name.lower().split()
        start = rng.randrange(len(words))
        queries.append(" ".join(words[start:start + rng.randint(1, 3)]))
    rows = [Probe("product", n) for n in products] + [Probe("query", q) for q in queries]
    lines = "".join(
        json.dumps({"kind": r.kind, "text": r.text}, ensure_ascii=False) + "\n" for r in rows)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(lines.encode("utf-8"))  # mtime=0: the same input gives the same bytes
    return len(rows)


if __name__ == "__main__":
    print(f"wrote {write_seed_file(Path(sys.argv[1]))} texts to {SEED_FILE}")
