"""The text an item is embedded from: one documented template over title, text and attributes.

The build, the trainer and live upserts all call `item_text`, so an item gets the same
vector whichever path embedded it. The template (docs/DATA.md):

    {title}. {text} | {name}: {value}; {name}: {value}

- `title` and `text` are stripped and their inner whitespace collapsed; `. {text}` is left
  out when text is empty or equals the title.
- Attributes follow ` | `, sorted by name so column order in a file never changes the
  vector; empty and purely numeric values (prices, counts: noise to a text encoder, and
  the ranker's business) are left out; with `include=[...]` only those names are used.
- The result is cut at `max_chars` (the tokenizer truncates to max_length tokens anyway;
  the cut keeps a pathological multi-megabyte description from costing tokenizer time).

`TEMPLATE_VERSION` goes into the bundle manifest; bump it whenever the output changes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

TEMPLATE_VERSION = 1
TEMPLATE = "{title}. {text} | {name}: {value}; ..."
DEFAULT_MAX_CHARS = 2048


def _clean(value: str) -> str:
    return " ".join(str(value).split())


def is_numeric(value: str) -> bool:
    """True for values like '2.55', '-3', '1e3' (not for '2-5' or 'v2')."""
    try:
        float(value)
    except ValueError:
        return False
    return True


def item_text(
    title: str,
    text: str = "",
    attributes: Mapping[str, str] | None = None,
    *,
    include: Sequence[str] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> str:
    """The text to embed for one item (see the module docstring for the template)."""
    title, text = _clean(title), _clean(text)
    out = title
    if text and text != title:
        out = f"{out}. {text}" if out else text
    if attributes:
        names = sorted(attributes) if include is None else [n for n in include if n in attributes]
        pairs = [(n, _clean(attributes[n])) for n in names]
        described = "; ".join(f"{n}: {v}" for n, v in pairs if v and not is_numeric(v))
        if described:
            out = f"{out} | {described}" if out else described
    return out[:max_chars]


def template_manifest(include: Sequence[str] | None, max_chars: int = DEFAULT_MAX_CHARS) -> dict:
    """The manifest section that lets the server and trainer reproduce item texts."""
    return {
        "version": TEMPLATE_VERSION,
        "template": TEMPLATE,
        "attributes": None if include is None else list(include),
        "max_chars": max_chars,
    }
