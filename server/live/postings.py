"""Attribute postings that live upserts can change (an item's attributes may be replaced)."""

from __future__ import annotations

from server.retrieval.filters import AttributePostings


class LivePostings(AttributePostings):
    """AttributePostings plus `remove`, so a changed attribute stops matching its old value."""

    def remove(self, label: int, attrs: dict[str, str]) -> None:
        for name, value in attrs.items():
            values = self._postings.get(name, {})
            current = values.get(str(value))
            if current is not None:
                values[str(value)] = current[current != label]

    def replace(self, label: int, old: dict[str, str], new: dict[str, str]) -> None:
        self.remove(label, old)
        self.add(label, new)
