"""Carts and orders on the guest document: cart lines, checkout, and admin/import order upserts.

``facts.order_count`` and ``facts.lifetime_value`` are running totals, not sums over ``orders``: the
order list is capped (20 by default) but a guest's lifetime value must not shrink when an old order
falls off the end.
"""

from __future__ import annotations

from typing import Any

from engine.errors import BadRequest
from engine.events import Event
from engine.types import JSONObject

STATUS_BY_TYPE = {"CONFIRM": "confirmed", "CHECKOUT": "checked_out", "ORDER_CHECKOUT": "purchased"}


def line_key(product: JSONObject) -> str:
    for name in ("item_id", "productId", "product_id", "referenceId", "sku"):
        value = product.get(name)
        if value is not None:
            return str(value)
    return str(product.get("name", ""))


def add_line(guest: JSONObject, product: JSONObject, currency: str) -> None:
    """An ADD line: the same item replaces its line (quantity and price as sent), others append."""
    cart = guest.setdefault("cart", {"items": [], "value": 0})
    key = line_key(product)
    line = {
        "item_id": key,
        "name": product.get("name"),
        "quantity": _number(product.get("quantity", 1)),
        "price": _number(product.get("price", 0)),
        "currency": product.get("currency", currency),
    }
    cart["items"] = [i for i in cart.get("items", []) if i.get("item_id") != key] + [line]
    cart["value"] = cart_value(cart["items"])


def cart_value(items: list[JSONObject]) -> float | int:
    total = sum(_number(i.get("price", 0)) * _number(i.get("quantity", 1)) for i in items)
    return round(total, 2) if isinstance(total, float) else total


def checkout(guest: JSONObject, event: Event, session: JSONObject, max_orders: int) -> JSONObject | None:
    """CONFIRM / CHECKOUT / ORDER_CHECKOUT: the cart becomes an order (one per session; later steps update it)."""
    cart = guest.get("cart") or {"items": [], "value": 0}
    given = event.order or {}
    ref = given.get("referenceId") or given.get("ref") or session.get("order_ref")
    if ref is None and not cart["items"]:
        return None
    order: JSONObject = {
        "ref": str(ref or f"o-{event.ref}"),
        "status": STATUS_BY_TYPE[event.type],
        "channel": event.channel,
        "pos": event.pos,
        "currency": given.get("currencyCode", event.currency),
        "at_ms": event.at_ms,
        "session_ref": session["ref"],
    }
    if cart["items"]:
        order["items"], order["value"] = cart["items"], cart["value"]
    if "price" in given:
        order["value"] = _number(given["price"])
    guest["cart"] = {"items": [], "value": 0}
    return upsert(guest, order, max_orders, merge=True)


def upsert(guest: JSONObject, order: JSONObject, max_orders: int, *, merge: bool) -> JSONObject:
    """Create or update an order by its ref, keeping the running totals right. Returns the stored order."""
    orders: list[JSONObject] = guest.setdefault("orders", [])
    facts = guest.setdefault("facts", {})
    existing = next((o for o in orders if o["ref"] == order["ref"]), None)
    if existing is None:
        stored = dict(order)
        stored.setdefault("value", 0)
        orders.append(stored)
        facts["order_count"] = facts.get("order_count", 0) + 1
        facts["lifetime_value"] = _add(facts.get("lifetime_value", 0), stored["value"])
        if len(orders) > max_orders:
            del orders[: len(orders) - max_orders]
        return stored
    before = existing.get("value", 0)
    stored = {**existing, **order} if merge else {"value": 0, **order}
    orders[orders.index(existing)] = stored
    facts["lifetime_value"] = _add(facts.get("lifetime_value", 0), _number(stored.get("value", 0)) - before)
    return stored


def parse_order(raw: Any, pointer: str) -> JSONObject:
    """An order from the admin API or an import file: ``ref`` required, ``value`` a number, items a list."""
    if not isinstance(raw, dict):
        raise BadRequest("an order must be a JSON object", pointer=pointer)
    ref = raw.get("ref")
    if not isinstance(ref, str) or not ref or len(ref) > 128:
        raise BadRequest("'ref' must be 1 to 128 characters", pointer=f"{pointer}/ref")
    value = raw.get("value", 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest("'value' must be a non-negative number", pointer=f"{pointer}/value")
    if "items" in raw and not isinstance(raw["items"], list):
        raise BadRequest("'items' must be an array", pointer=f"{pointer}/items")
    if "status" in raw and not isinstance(raw["status"], str):
        raise BadRequest("'status' must be a string", pointer=f"{pointer}/status")
    return {k: v for k, v in raw.items() if k != "guest_ref"}


def _number(value: Any) -> float | int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0


def _add(a: float | int, b: float | int) -> float | int:
    total = a + b
    return round(total, 2) if isinstance(total, float) else total
