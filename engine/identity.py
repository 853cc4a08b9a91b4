"""Identity resolution: which guest a browser or identifier names, and merging two guests into one.

A merge crosses two guests, hence two hash slots on a Redis Cluster, so no single script can do it.
It is a three-step protocol instead, each step one atomic compare-and-set on one guest and each safe
to repeat, keyed by the merge id ``merge:<retired ref>``:

1. **retire** the absorbed guest in its own slot: type ``retired``, ``survivor`` set, data left in
   place. From this commit on, every event for it is redirected to the survivor, and any event that
   read it before fails its compare-and-set and re-reads (so no event lands on a retired guest).
2. **fold** its sessions, cart, orders, identifiers and experiment assignments into the survivor
   (the survivor's assignment wins for an experiment both have), with the merge id as the commit's
   token, so a repeated fold is a duplicate and a no-op.
3. **clear** the retired guest's data and mark it ``folded``; then re-point its identifiers.

A crash after step 1 leaves a retired, unfolded guest; whoever next resolves it (an event, a decide via
its browser id, the sweeper) finishes steps 2–3. Nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import copy
from typing import Any

from engine import orders
from engine.errors import Conflict
from engine.profiles import Commit, Profiles, update
from engine.sessions import Limits, new_guest, trim_closed_history
from engine.types import JSONObject

MAX_HOPS = 16


def _is_retired(guest: JSONObject | None) -> bool:
    return guest is not None and guest.get("type") == "retired"


async def resolve(profiles: Profiles, ref: str, now_ms: int, limits: Limits) -> str:
    """The live guest behind ``ref``: follows retired guests to their survivor, finishing unfinished folds."""
    for _ in range(MAX_HOPS):
        guest = (await profiles.read(ref)).guest
        if guest is None or not _is_retired(guest):
            return ref
        if not guest.get("folded"):
            await fold(profiles, ref, now_ms, limits)
        ref = guest["survivor"]
    raise Conflict(f"guest {ref} is retired through more than {MAX_HOPS} merges")


async def identify(
    profiles: Profiles, ref: str, identifiers: tuple[JSONObject, ...], now_ms: int, limits: Limits
) -> str:
    """Bind ``identifiers`` to the guest ``ref`` (already resolved); merge into their owner where one exists.

    Returns the surviving guest's ref. Claiming the index entry with set-if-absent is what makes two
    browsers identifying as the same person at once end up as one guest, not two.
    """
    for ident in identifiers:
        owner = await profiles.claim(ident["provider"], ident["id"], ref)
        if owner == ref:
            continue
        owner = await resolve(profiles, owner, now_ms, limits)
        if owner == ref:
            continue
        if (await profiles.read(owner)).guest is None:
            # The index named a guest that was since forgotten: the identifier is free again.
            await profiles.point(ident["provider"], ident["id"], ref)
            continue
        ref = await merge(profiles, ref, owner, now_ms, limits)
    return ref


async def merge(profiles: Profiles, absorbed: str, survivor: str, now_ms: int, limits: Limits) -> str:
    """Merge guest ``absorbed`` into ``survivor``; idempotent. Returns the ref that survived."""

    def retire(guest: JSONObject | None) -> Any:
        if _is_retired(guest):
            return None
        g = copy.deepcopy(guest) if guest is not None else {**new_guest(absorbed), "folded": True}
        g.update(type="retired", survivor=survivor, merge_id=f"merge:{absorbed}", retired_ms=now_ms)
        return g

    await update(profiles, absorbed, retire, token=None, now_ms=now_ms)
    # Retired before us by someone else (possibly into another survivor): follow wherever it went.
    await fold(profiles, absorbed, now_ms, limits)
    return await resolve(profiles, survivor, now_ms, limits)


async def fold(profiles: Profiles, retired_ref: str, now_ms: int, limits: Limits) -> None:
    """Steps 2 and 3 of the protocol for a guest already retired."""
    snap = await profiles.read(retired_ref)
    retired = snap.guest
    if retired is None or not _is_retired(retired) or retired.get("folded"):
        return
    carried = await profiles.tokens(retired_ref)
    target = retired["survivor"]
    for _ in range(MAX_HOPS):

        def absorb(guest: JSONObject | None, target: str = target) -> Any:
            if _is_retired(guest):
                return None, guest
            return fold_documents(guest or new_guest(target), retired, limits), None

        outcome, (_, redirect) = await update(
            profiles, target, absorb, token=retired["merge_id"], now_ms=now_ms, carried=carried
        )
        if redirect is None or outcome is Commit.DUPLICATE:
            break
        target = redirect["survivor"]

    def clear(guest: JSONObject | None) -> Any:
        if guest is None or guest.get("folded"):
            return None
        return {
            "ref": retired_ref, "type": "retired", "survivor": target, "merge_id": guest["merge_id"],
            "retired_ms": guest.get("retired_ms"), "folded": True,
        }  # fmt: skip

    await update(profiles, retired_ref, clear, token=None, now_ms=now_ms)
    for ident in retired.get("identifiers", []):
        await profiles.point(ident["provider"], ident["id"], target)


def fold_documents(survivor: JSONObject, absorbed: JSONObject, limits: Limits) -> JSONObject:
    """The survivor with the absorbed guest's history folded in (pure)."""
    g = copy.deepcopy(survivor)
    if g.get("type") == "visitor" and absorbed.get("identifiers"):
        g["type"] = "customer"
    sessions = [*g.get("sessions", []), *copy.deepcopy(absorbed.get("sessions", []))]
    sessions.sort(key=lambda s: s["started_ms"])
    g["sessions"] = sessions[-limits.max_sessions :]
    trim_closed_history(g, limits)
    cart, theirs = g.setdefault("cart", {"items": [], "value": 0}), absorbed.get("cart") or {"items": []}
    mine = {i["item_id"] for i in cart["items"]}
    cart["items"] = [*cart["items"], *(i for i in theirs["items"] if i["item_id"] not in mine)]
    cart["value"] = orders.cart_value(cart["items"])
    for order in absorbed.get("orders", []):
        orders.upsert(g, copy.deepcopy(order), limits.max_orders, merge=True)
    g["assignments"] = {**absorbed.get("assignments", {}), **g.get("assignments", {})}
    g["attributes"] = {**absorbed.get("attributes", {}), **g.get("attributes", {})}
    g["ext"] = {**absorbed.get("ext", {}), **g.get("ext", {})}
    known = {(i["provider"], i["id"]) for i in g.get("identifiers", [])}
    theirs_ids = [i for i in absorbed.get("identifiers", []) if (i["provider"], i["id"]) not in known]
    g["identifiers"] = [*g.get("identifiers", []), *theirs_ids]
    g["aliases"] = sorted({*g.get("aliases", []), absorbed["ref"], *absorbed.get("aliases", [])})
    facts, other = g.setdefault("facts", {}), absorbed.get("facts", {})
    for name in ("session_count", "event_count"):
        facts[name] = facts.get(name, 0) + other.get(name, 0)
    facts["last_seen_ms"] = max(facts.get("last_seen_ms", 0), other.get("last_seen_ms", 0))
    for name in ("last_viewed_products", "last_viewed_categories"):
        merged = [*facts.get(name, []), *(v for v in other.get(name, []) if v not in facts.get(name, []))]
        if merged:
            facts[name] = merged[:10]
    facts["cart_value"] = cart["value"]
    return g
