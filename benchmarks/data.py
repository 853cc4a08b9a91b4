"""One data generator for every benchmark: seeded, so runs are comparable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.model import parse_document

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261123


def example_model(name: str = "next-best-offer.json") -> dict[str, Any]:
    return parse_document((ROOT / "models" / name).read_bytes())


def guests(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """Guests whose lifetime value and order counts look like a real shop's: most small, a long tail."""
    rng = np.random.default_rng(seed)
    ltv = rng.lognormal(mean=4.5, sigma=1.3, size=n)
    orders = rng.poisson(lam=2.0, size=n)
    carts = rng.choice([0.0, 25.0, 80.0, 240.0], p=[0.7, 0.15, 0.1, 0.05], size=n)
    return [
        {
            "ref": f"g{i}",
            "facts": {"lifetime_value": round(float(v), 2), "order_count": int(o)},
            "cart": {"value": float(c)},
        }
        for i, (v, o, c) in enumerate(zip(ltv, orders, carts, strict=True))
    ]


def big_table_model(rules: int = 200, seed: int = SEED) -> dict[str, Any]:
    """A FIRST table of ``rules`` rules over three inputs: a category string, a numeric range, a tier list."""
    rng = np.random.default_rng(seed)
    categories = [f"cat{i}" for i in range(40)]
    tiers = ['"gold"', '"silver"', '"bronze"', '"gold","silver"', "-"]
    rows = []
    for i in range(rules):
        lo = int(rng.integers(0, 900))
        rows.append(
            {
                "id": f"r{i}",
                "when": [
                    f'"{categories[int(rng.integers(0, 40))]}"',
                    f"[{lo}..{lo + 100})",
                    tiers[int(rng.integers(0, 5))],
                ],
                "then": [f'"offer-{i}"', str(int(rng.integers(1, 100)))],
            }
        )
    return {
        "nodes": [
            {
                "id": "pick",
                "kind": "table",
                "hit_policy": "FIRST",
                "inputs": [{"expr": "context.category"}, {"expr": "context.price"}, {"expr": "guest.attributes.tier"}],
                "outputs": [{"name": "offer"}, {"name": "score"}],
                "rules": rows,
            }
        ]
    }
