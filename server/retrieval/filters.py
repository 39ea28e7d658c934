"""Request filters as boolean masks over item labels, from per-attribute posting lists."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ItemFilter:
    """Which items a request may return (deleted items never)."""

    attribute_equals: dict[str, str] = field(default_factory=dict)
    attribute_in: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_labels: tuple[int, ...] = ()

    @property
    def restricts_attributes(self) -> bool:
        return bool(self.attribute_equals or self.attribute_in)


class AttributePostings:
    """attribute -> value -> labels; built once per catalog, extended by live upserts."""

    def __init__(self, attributes: list[dict[str, str]]) -> None:
        lists: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for label, attrs in enumerate(attributes):
            for name, value in attrs.items():
                lists[name][str(value)].append(label)
        self._postings = {
            name: {value: np.asarray(labels, dtype=np.int64) for value, labels in values.items()}
            for name, values in lists.items()
        }

    def add(self, label: int, attrs: dict[str, str]) -> None:
        for name, value in attrs.items():
            values = self._postings.setdefault(name, {})
            current = values.get(str(value), np.empty(0, np.int64))
            values[str(value)] = np.append(current, label)

    def remove(self, label: int, attrs: dict[str, str]) -> None:
        """A changed or deleted item stops matching its old values."""
        for name, value in attrs.items():
            values = self._postings.get(name, {})
            current = values.get(str(value))
            if current is not None:
                values[str(value)] = current[current != label]

    def replace(self, label: int, old: dict[str, str], new: dict[str, str]) -> None:
        self.remove(label, old)
        self.add(label, new)

    def matching(self, name: str, allowed_values: tuple[str, ...], size: int) -> np.ndarray:
        mask = np.zeros(size, dtype=bool)
        values = self._postings.get(name, {})
        for value in allowed_values:
            labels = values.get(value)
            if labels is not None:
                mask[labels[labels < size]] = True
        return mask


def allowed_mask(item_filter: ItemFilter, postings: AttributePostings, present: np.ndarray) -> np.ndarray:
    """Bool mask over labels: present (not deleted), matching every attribute constraint."""
    mask = present.copy()
    size = len(mask)
    for name, value in item_filter.attribute_equals.items():
        mask &= postings.matching(name, (value,), size)
    for name, values in item_filter.attribute_in.items():
        mask &= postings.matching(name, values, size)
    if item_filter.exclude_labels:
        excluded = np.asarray(item_filter.exclude_labels, dtype=np.int64)
        mask[excluded[excluded < size]] = False
    return mask
