"""The demo data: a seeded sample of the real Online Retail data (1,000 customers, the items
they bought, their purchases), derived by `recserve data online-retail` — see README.md here
for the exact command, counts and the data's attribution (CC BY 4.0).

The server builds its default bundle from these files on first use.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def demo_catalog_path() -> Path:
    """catalog.csv.gz: item_id, title, created_at, price, price_band."""
    return _HERE / "catalog.csv.gz"


def demo_interactions_path() -> Path:
    """interactions.csv.gz: user_id, item_id, timestamp, event, quantity, invoice."""
    return _HERE / "interactions.csv.gz"
