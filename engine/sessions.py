"""Sessions, carts and facts: how one event changes one guest document.

Functions over the guest document (no I/O, no clock of their own: the time is the event's or the
sweeper's ``now_ms``), shared by both backends so the rules are written once. A backend reads the guest
(a private copy), calls :func:`apply_event` on it — in place, so a batch applies a browser's events one
after another to one document — and commits the result atomically (compare-and-set on the revision).

Sessions are per (channel, point of sale). One closes when an event arrives after ``session_timeout_ms``
of inactivity, or when the sweeper finds it idle; a closed session that had ADD events, still has a cart
and produced no order is *abandoned*, and its abandonment is reported once so a trigger can act on it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from engine import orders
from engine.events import ORDER_TYPES, PERSON_FIELDS, Event
from engine.store import StoredEvents, empty_guest
from engine.types import JSONObject

RECENT_VIEWS = 10


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounded history, so a decision reads a predictable amount of data (Sitecore's defaults)."""

    session_timeout_ms: int = 20 * 60 * 1000
    max_sessions: int = 40
    max_events_per_session: int = 100
    max_orders: int = 20
    max_closed_session_events: int = 100
    """Events kept across a guest's closed sessions, newest first; older closed sessions keep their summary
    (times, ``event_count``, status, cart value, order) without their events. Every event and every decision
    reads the whole session history, so without this budget a guest at the other limits (40 sessions of 100
    events, ~0.6 MB of JSON) cost ~4.6 ms of CPU per event and 3.4 ms per read (``benchmarks/history.py``)."""


@dataclass(slots=True)
class Outcome:
    guest: JSONObject
    abandoned: list[JSONObject] = field(default_factory=list)
    """Sessions this change closed as abandoned carts, to emit onto the ``abandoned`` stream."""
    opened: bool = False
    """The event opened a session, so the guest goes onto the sweeper's active-sessions index."""


def new_guest(ref: str) -> JSONObject:
    guest = empty_guest(ref)
    guest.pop("known", None)
    return guest


def apply_event(guest: JSONObject | None, ref: str, event: Event, limits: Limits) -> Outcome:
    """Apply ``event`` to ``guest`` **in place** (or to a new guest when None); the outcome holds the result.

    The caller owns ``guest``: :meth:`Profiles.read` returns a private copy and a failed compare-and-set
    re-reads, so no copy is made here (a deepcopy per event was 10 % of a saturated events worker).
    """
    g = guest if guest is not None else new_guest(ref)
    out = Outcome(g)
    close_idle(g, event.at_ms, limits, out)
    session = _open_session(g, event, limits)
    session["last_ms"] = event.at_ms
    session["event_count"] = session.get("event_count", 0) + 1
    out.opened = session["event_count"] == 1
    events = session["events"]
    events.append(_compact(event))
    if len(events) > limits.max_events_per_session:
        del events[: len(events) - limits.max_events_per_session]
    facts = g.setdefault("facts", {})
    facts["last_seen_ms"] = event.at_ms
    facts["event_count"] = facts.get("event_count", 0) + 1
    match event.type:
        case "ADD":
            session["added"] = True
            orders.add_line(g, event.product or {}, event.currency)
        case "CLEAR_CART":
            g["cart"] = {"items": [], "value": 0}
        case "VIEW":
            _remember_view(facts, event)
        case "IDENTITY":
            identify(g, event)
        case kind if kind in ORDER_TYPES:
            order = orders.checkout(g, event, session, limits.max_orders)
            if order is not None:
                session["order_ref"] = order["ref"]
    facts["cart_value"] = g["cart"]["value"]
    return out


def close_idle(guest: JSONObject, now_ms: int, limits: Limits, out: Outcome | None = None) -> list[JSONObject]:
    """Close every open session idle for longer than the timeout; returns the abandoned-cart records."""
    abandoned = out.abandoned if out is not None else []
    closed = False
    for session in guest.get("sessions", []):
        # .get: sessions imported or written by older versions may lack fields; they count as closed.
        if session.get("status") == "open" and now_ms - session.get("last_ms", 0) > limits.session_timeout_ms:
            closed = True
            session["status"] = "closed"
            session["closed_ms"] = session["last_ms"] + limits.session_timeout_ms
            cart = guest.get("cart") or {}
            if session.get("added") and not session.get("order_ref") and cart.get("items"):
                session["status"] = "abandoned"
                session["cart_value"] = cart["value"]
                abandoned.append(
                    {
                        "guest_ref": guest["ref"],
                        "session_ref": session["ref"],
                        "channel": session["channel"],
                        "pos": session["pos"],
                        "value": cart["value"],
                        "items": copy.deepcopy(cart["items"]),
                        "closed_ms": session["closed_ms"],
                    }
                )
    if closed:
        trim_closed_history(guest, limits)
    return abandoned


def trim_closed_history(guest: JSONObject, limits: Limits) -> None:
    """Keep at most ``limits.max_closed_session_events`` events across the closed sessions, the newest ones.

    A session losing events keeps its ``event_count`` (the events it had), so a model can still count them.
    """
    budget = limits.max_closed_session_events
    for session in reversed(guest.get("sessions", [])):
        if session.get("status") == "open":
            continue
        events = session.get("events")
        if type(events) is StoredEvents:
            events = session["events"] = events.load()
        if not events:
            continue
        session.setdefault("event_count", len(events))
        if len(events) > budget:
            del events[: len(events) - budget]
        budget -= len(events)


def has_open_session(guest: JSONObject) -> bool:
    return any(s.get("status") == "open" for s in guest.get("sessions", []))


def identify(guest: JSONObject, event: Event) -> None:
    """An IDENTITY event makes the guest known: identifiers and person fields go onto the profile."""
    if guest.get("type") == "visitor":
        guest["type"] = "customer"
    known = {(i["provider"], i["id"]) for i in guest.get("identifiers", [])}
    for ident in event.identifiers:
        if (ident["provider"], ident["id"]) not in known:
            guest.setdefault("identifiers", []).append(dict(ident))
            known.add((ident["provider"], ident["id"]))
    attributes = guest.setdefault("attributes", {})
    for name in PERSON_FIELDS:
        value = event.data.get(name)
        if value is not None:
            attributes[name] = value


def _open_session(guest: JSONObject, event: Event, limits: Limits) -> JSONObject:
    sessions = guest.setdefault("sessions", [])
    for existing in reversed(sessions):
        open_here = existing.get("channel") == event.channel and existing.get("pos") == event.pos
        if existing.get("status") == "open" and open_here:
            found: JSONObject = existing
            return found
    session: JSONObject = {
        "ref": f"s-{event.ref}",
        "channel": event.channel,
        "pos": event.pos,
        "status": "open",
        "started_ms": event.at_ms,
        "last_ms": event.at_ms,
        "events": [],
    }
    sessions.append(session)
    if len(sessions) > limits.max_sessions:
        del sessions[: len(sessions) - limits.max_sessions]
    facts = guest.setdefault("facts", {})
    facts["session_count"] = facts.get("session_count", 0) + 1
    return session


def _compact(event: Event) -> JSONObject:
    """What a session keeps of an event: enough for rules and segments, not the whole wire body."""
    out: JSONObject = {"ref": event.ref, "type": event.type, "at_ms": event.at_ms, "page": event.page}
    if event.ext:
        out["ext"] = event.ext
    if event.product is not None:
        out["product"] = event.product
    if event.type not in ("VIEW", "IDENTITY") and event.data:
        out["data"] = {k: v for k, v in event.data.items() if not k.startswith("utm_") and k != "requested_ms"}
    return out


def _remember_view(facts: JSONObject, event: Event) -> None:
    product = event.ext.get("product_id") or (event.product or {}).get("item_id")
    category = event.ext.get("category") or (event.product or {}).get("category")
    for name, value in (("last_viewed_products", product), ("last_viewed_categories", category)):
        if value is None:
            continue
        recent = [v for v in facts.get(name, []) if v != value]
        facts[name] = [value, *recent][:RECENT_VIEWS]
