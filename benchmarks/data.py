"""One data generator for every benchmark: seeded, so runs are comparable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from benchmarks.floor_app import floor_key
from engine import keys
from engine.model import parse_document
from engine.store.redis import guest_fields
from engine.types import JSONObject

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


# --- the load scenario: guests with history, stored as the Redis store lays them out ------------------
CHANNELS = ("WEB", "APP", "STORE")
CATEGORIES = ("shoes", "outerwear", "denim", "accessories", "knitwear", "sport", "kids", "home")
COUNTRIES = ("DE", "FR", "NL", "GB", "IT", "ES", "SE", "PL")


def guest_ref(i: int) -> str:
    """The browser id / guest ref of guest ``i``: load generators and seeders agree through this."""
    return f"bench-{i:07d}"


def guest_documents(n: int, seed: int = SEED, start: int = 0, session_events: int = 0) -> Iterator[JSONObject]:
    """``n`` guests with history (sessions, orders, cart), as a storefront would have built them.

    Sizes follow a real shop's long tail: most guests have a few sessions and no or one order; a few
    have dozens. Without session events a typical document is ~0.7 KB of JSON, the tail ~3 KB. With
    ``session_events`` (the closed-session budget an engine keeps, ``ARBITER_MAX_CLOSED_SESSION_EVENTS``), the
    newest sessions carry their page views as events, newest first, up to that many: ~60 events and ~10 KB on
    average. Lazy, so a million guests never sit in memory.
    """
    rng = np.random.default_rng([seed, start])
    # Its own stream, so the guests are the same with or without their events.
    event_rng = np.random.default_rng([seed, start, 1])
    for i in range(start, start + n):
        n_orders = min(int(rng.poisson(1.5) if rng.random() < 0.8 else rng.poisson(12)), 40)
        n_sessions = min(1 + int(rng.geometric(0.25)), 30)
        orders = [
            {
                "id": f"o{i}-{k}",
                "at": f"2026-{1 + int(rng.integers(0, 10)):02d}-{1 + int(rng.integers(0, 28)):02d}",
                "total": round(float(rng.lognormal(4.0, 0.8)), 2),
                "items": int(rng.integers(1, 6)),
                "category": CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
            }
            for k in range(n_orders)
        ]
        sessions = []
        for k in range(n_sessions):
            day, hour = 1 + int(rng.integers(0, 28)), int(rng.integers(0, 24))
            started_ms = 1_790_812_800_000 + ((day - 1) * 24 + hour) * 3_600_000  # 2026-10-01T00:00Z onwards
            # The shape engine/sessions.py writes (closed sessions), plus the page count the scenario model reads.
            sessions.append({
                "ref": f"s-{i}-{k}", "channel": CHANNELS[int(rng.integers(0, 3))], "pos": "default",
                "status": "closed", "started_ms": started_ms, "last_ms": started_ms + 600_000, "events": [],
                "at": f"2026-10-{day:02d}T{hour:02d}:00:00Z", "pages": int(rng.integers(1, 30)),
            })  # fmt: skip
        sessions.sort(key=lambda x: x["started_ms"])  # oldest first, as the engine appends them
        _fill_events(sessions, session_events, event_rng)
        cart_items = [
            {
                "item_id": f"sku-{int(rng.integers(0, 5000))}",
                "price": round(float(rng.lognormal(3.5, 0.6)), 2),
                "quantity": 1,
            }
            for _ in range(int(rng.choice([0, 0, 0, 1, 2, 3])))
        ]
        ltv = round(sum(o["total"] for o in orders), 2)
        yield {
            "ref": guest_ref(i),
            "type": "customer" if n_orders else "visitor",
            "known": bool(n_orders),
            "attributes": {
                "country": COUNTRIES[int(rng.integers(0, len(COUNTRIES)))],
                "newsletter": bool(rng.random() < 0.3),
                "favourite_category": CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
            },
            "ext": {},
            "identifiers": [],
            "segments": [s for s in ("returning", "app-user", "discount-seeker") if rng.random() < 0.3],
            "facts": {"lifetime_value": ltv, "order_count": n_orders, "sessions_30d": n_sessions},
            "cart": {"items": cart_items, "value": round(sum(c["price"] for c in cart_items), 2)},
            "sessions": sessions,
            "orders": orders,
            "assignments": {},
        }


def _fill_events(sessions: list[JSONObject], budget: int, rng: np.random.Generator) -> None:
    """The newest sessions' page views as the engine keeps them (engine/sessions.py ``_compact``): VIEW events of
    a product page, at most ``budget`` across the guest's closed sessions."""
    for session in reversed(sessions):
        if budget <= 0:
            break
        views = min(session["pages"], budget)
        budget -= views
        events = []
        for j in range(views):
            category = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
            sku = f"sku-{int(rng.integers(0, 5000))}"
            events.append({
                "ref": f"e-{session['ref']}-{j}", "type": "VIEW", "at_ms": session["started_ms"] + j * 20_000,
                "page": f"/{category}/{sku}", "ext": {"product_id": sku, "category": category},
            })  # fmt: skip
        session["events"] = events
        session["event_count"] = session["pages"]


def seed_guests(url: str, n: int, *, seed: int = SEED, batch: int = 2000, session_events: int = 0) -> int:
    """Write ``n`` guests to the Redis at ``url`` in pipelined batches; returns the bytes written."""
    client = redis.Redis.from_url(url)
    written = 0
    try:
        pipe = client.pipeline(transaction=False)
        for k, guest in enumerate(guest_documents(n, seed, session_events=session_events), 1):
            fields = guest_fields(guest)
            written += sum(len(v) for v in fields.values())
            pipe.hset(keys.guest(guest["ref"]), mapping=fields)  # type: ignore[arg-type]
            if k % batch == 0:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
    return written


def decide_bodies(n: int, guests_n: int, seed: int = SEED) -> list[bytes]:
    """``n`` decide request bodies spread over ``guests_n`` guests (a few unknown ones, as in real traffic)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for _ in range(n):
        i = int(rng.integers(0, guests_n * 1.02))  # ~2 % unknown browsers: a fresh visitor, no stored guest
        out.append(
            orjson.dumps(
                {
                    "guest": {"browser_id": guest_ref(i)},
                    "context": {
                        "channel": CHANNELS[int(rng.integers(0, 3))],
                        "page": "product",
                        "category": CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
                        "price": round(float(rng.lognormal(3.5, 0.7)), 2),
                        "now": "2026-11-23",
                    },
                }
            )
        )
    return out


def events(n: int, guests_n: int, seed: int = SEED, run: int = 0, tag: str = "") -> list[JSONObject]:
    """``n`` storefront events (views, add-to-cart) over ``guests_n`` guests, each with its own ref.

    ``run`` and ``tag`` salt the refs: a repeated ref is acknowledged as a duplicate without being applied,
    so each measured run needs refs no earlier run sent.
    """
    rng = np.random.default_rng([seed, 11, run])
    kinds = ("VIEW", "VIEW", "VIEW", "ADD", "SEARCH")
    return [
        {
            "ref": f"ev-{seed}-{tag}{run}-{k}",
            "type": kinds[int(rng.integers(0, len(kinds)))],
            "browser_id": guest_ref(int(rng.integers(0, guests_n))),
            "channel": CHANNELS[int(rng.integers(0, 3))],
            "language": "EN",
            "currency": "EUR",
            "page": "product",
            "category": CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
            # Every kind carries a product: ADD requires one, the others keep it as extra data.
            "product": {"item_id": f"SKU-{int(rng.integers(1, 500))}", "price": 49.5, "quantity": 1},
        }
        for k in range(n)
    ]


def event_bodies(n: int, guests_n: int, seed: int = SEED, *, batch: int = 1, run: int = 0) -> list[bytes]:
    """``n`` request bodies for ``POST /v1/events``: one event each, or ``{"events": [batch events]}``.

    A batch holds events of different guests, as a server-side collector forwards them.
    """
    evs = events(n * batch, guests_n, seed, run, tag=f"b{batch}-")
    if batch == 1:
        return [orjson.dumps(e) for e in evs]
    return [orjson.dumps({"events": evs[k : k + batch]}) for k in range(0, len(evs), batch)]


def seed_floor(url: str, n: int, *, seed: int = SEED, batch: int = 2000) -> None:
    """The floor app's copy of ``n`` guests (benchmarks/floor_app.py): each as one JSON string, without session
    events, what a decision whose model reads none needs; its GET carries and parses no more than such a decision
    does, which if anything flatters the floor."""
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for k, guest in enumerate(guest_documents(n, seed), 1):
            pipe.set(floor_key(guest["ref"]), orjson.dumps(guest))
            if k % batch == 0:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
