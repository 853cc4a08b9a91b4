"""Guests as the admin API and batch imports change them: find, create, patch, forget; their orders.

Every write is a compare-and-set through :func:`engine.profiles.update`, the same path events take, so an
admin patch never overwrites an event that landed a moment earlier (and vice versa).
"""

from __future__ import annotations

import copy
from typing import Any

from engine import identity, orders
from engine.errors import BadRequest, Conflict, NotFound
from engine.events import parse_ext, parse_identifiers
from engine.ids import new_id
from engine.profiles import Profiles, update
from engine.sessions import Limits, new_guest
from engine.types import JSONObject

GUEST_TYPES = ("visitor", "customer")
WRITABLE = frozenset({"ref", "type", "attributes", "ext", "identifiers"})


class Guests:
    def __init__(self, profiles: Profiles, limits: Limits) -> None:
        self.profiles = profiles
        self.limits = limits

    async def find(self, *, ref: str | None = None, provider: str | None = None, identifier: str | None = None,
                   now_ms: int) -> JSONObject:  # fmt: skip
        """The live guest named by a guest ref, a browser id (both are refs) or an identifier."""
        if ref is None and provider and identifier:
            ref = await self.profiles.owner(provider.lower(), identifier)
        if ref is None:
            raise NotFound("no guest has that identifier")
        live = await identity.resolve(self.profiles, ref, now_ms, self.limits)
        guest = (await self.profiles.read(live)).guest
        if guest is None:
            raise NotFound(f"guest {ref} does not exist")
        return guest

    async def create(self, raw: Any, *, mode: str, now_ms: int) -> tuple[JSONObject, bool]:
        """``insert`` (fails if it exists), ``upsert`` (replace the given fields) or ``merge`` (deep-merge them).

        Returns (the guest, whether anything changed) — re-running an import line changes nothing.
        """
        body = parse_guest(raw, "")
        ref = body.get("ref") or new_id()

        def change(guest: JSONObject | None) -> Any:
            if guest is not None and guest.get("type") == "retired":
                raise Conflict(f"guest {ref} was merged into {guest['survivor']}", pointer="/ref")
            if guest is not None and mode == "insert":
                return None, guest, False
            before = guest or new_guest(ref)
            after = _merged(before, body) if mode == "merge" else _upserted(before, body)
            return (after if after != guest else None), after, after != guest

        _, (_, guest, changed) = await update(self.profiles, ref, change, token=None, now_ms=now_ms)
        for ident in body.get("identifiers", []):
            await self.profiles.claim(ident["provider"], ident["id"], ref)
        return guest, changed

    async def patch(self, ref: str, raw: Any, *, now_ms: int) -> JSONObject:
        """Partial update: only the attribute / extension keys given; a null value removes the key."""
        live = await identity.resolve(self.profiles, ref, now_ms, self.limits)
        body = parse_guest(raw, "")

        def change(guest: JSONObject | None) -> Any:
            if guest is None:
                raise NotFound(f"guest {ref} does not exist")
            return _merged(guest, body)

        _, guest = await update(self.profiles, live, change, token=None, now_ms=now_ms)
        return guest  # type: ignore[no-any-return]

    async def forget(self, ref: str, *, now_ms: int) -> list[str]:
        """Right to be forgotten: the guest, every retired alias of it, and its identifier index entries."""
        live = await identity.resolve(self.profiles, ref, now_ms, self.limits)
        guest = (await self.profiles.read(live)).guest
        if guest is None:
            raise NotFound(f"guest {ref} does not exist")
        refs = sorted({live, ref, *guest.get("aliases", [])})
        await self.profiles.delete(refs)
        for ident in guest.get("identifiers", []):
            await self.profiles.release(ident["provider"], ident["id"], live)
        return refs

    async def put_order(self, guest_ref: str, raw: Any, *, mode: str, now_ms: int) -> tuple[JSONObject, bool]:
        order = orders.parse_order(raw, "")
        live = await identity.resolve(self.profiles, guest_ref, now_ms, self.limits)

        def change(guest: JSONObject | None) -> Any:
            if guest is None:
                raise NotFound(f"guest {guest_ref} does not exist", pointer="/guest_ref")
            g = copy.deepcopy(guest)
            existing = next((o for o in g.get("orders", []) if o["ref"] == order["ref"]), None)
            if existing is not None and mode == "insert":
                return None, existing, False
            stored = orders.upsert(g, order, self.limits.max_orders, merge=mode == "merge")
            return (g if g != guest else None), stored, g != guest

        _, (_, stored, changed) = await update(self.profiles, live, change, token=None, now_ms=now_ms)
        return stored, changed


def parse_guest(raw: Any, pointer: str) -> JSONObject:
    if not isinstance(raw, dict):
        raise BadRequest("a guest must be a JSON object", pointer=pointer)
    unknown = sorted(set(raw) - WRITABLE)
    if unknown:
        raise BadRequest(f"unknown guest field '{unknown[0]}'; writable: {', '.join(sorted(WRITABLE))}",
                         pointer=f"{pointer}/{unknown[0]}")  # fmt: skip
    out: JSONObject = {}
    if "ref" in raw:
        if not isinstance(raw["ref"], str) or not raw["ref"] or len(raw["ref"]) > 128:
            raise BadRequest("'ref' must be 1 to 128 characters", pointer=f"{pointer}/ref")
        out["ref"] = raw["ref"]
    if "type" in raw:
        if raw["type"] not in GUEST_TYPES:
            raise BadRequest("'type' must be 'visitor' or 'customer'", pointer=f"{pointer}/type")
        out["type"] = raw["type"]
    if "attributes" in raw:
        if not isinstance(raw["attributes"], dict):
            raise BadRequest("'attributes' must be an object", pointer=f"{pointer}/attributes")
        out["attributes"] = raw["attributes"]
    if "ext" in raw:
        out["ext"] = parse_ext(raw["ext"], f"{pointer}/ext")
    if "identifiers" in raw:
        out["identifiers"] = list(parse_identifiers(raw["identifiers"], f"{pointer}/identifiers", required=False))
    return out


def _upserted(guest: JSONObject, body: JSONObject) -> JSONObject:
    g = copy.deepcopy(guest)
    for name in ("type", "attributes", "ext"):
        if name in body:
            g[name] = copy.deepcopy(body[name])
    if "identifiers" in body:
        g["identifiers"] = _union(g.get("identifiers", []), body["identifiers"])
        if g.get("type") == "visitor" and g["identifiers"]:
            g["type"] = "customer"
    return g


def _merged(guest: JSONObject, body: JSONObject) -> JSONObject:
    g = copy.deepcopy(guest)
    if "type" in body:
        g["type"] = body["type"]
    for name in ("attributes", "ext"):
        target = g.setdefault(name, {})
        for key, value in body.get(name, {}).items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(value)
    if body.get("identifiers"):
        g["identifiers"] = _union(g.get("identifiers", []), body["identifiers"])
        if g.get("type") == "visitor":
            g["type"] = "customer"
    return g


def _union(mine: list[JSONObject], theirs: list[JSONObject]) -> list[JSONObject]:
    known = {(i["provider"], i["id"]) for i in mine}
    return [*mine, *(i for i in theirs if (i["provider"], i["id"]) not in known)]
