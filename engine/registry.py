"""The model registry: lifecycle operations over the store, and the local caches the decide path reads.

Two caches keep models off the request path's Redis round trip:
- compiled plans by (key, version), an LRU: versions are immutable, so an entry is never stale;
- which version serves production/test per key, for a short TTL, dropped on local changes and on
  peers' change notices, so a publish or rollback reaches every process within ``model_cache_ttl_s``.
  Each entry also keeps the plans it resolved to, so a decision finds its plans with one dict lookup and
  one clock read (cachetools' TTLCache and LRUCache took eight Python calls per decision to do the same).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, NamedTuple

import orjson
from cachetools import LRUCache

from engine import notices
from engine.errors import BadRequest, NotFound, Unavailable
from engine.lifecycle import rollback_target
from engine.model import check_key, compile_model, parse_document
from engine.plan import Plan
from engine.store import ModelPointers, Store
from engine.types import JSONObject

PLAN_CACHE_SIZE = 1024
POINTER_CACHE_SIZE = 4096
"""Model keys whose pointers are cached at once; past it the cache starts over (requests may name any key)."""


class _Pointed(NamedTuple):
    """A key's pointers as read at some moment, valid until ``expires_s`` (monotonic)."""

    expires_s: float
    pointers: ModelPointers | None
    serving: tuple[Plan, Plan | None] | None = None
    """The production and shadow plans those pointers name, once a decision resolved them."""


class Registry:
    def __init__(
        self, store: Store, *, pointer_ttl_s: float = 1.0, services: Any = None, max_result_bytes: int = 65_536
    ):
        self.store = store
        self.services = services
        self.max_result_bytes = max_result_bytes
        self._plans: LRUCache[tuple[str, int], Plan] = LRUCache(PLAN_CACHE_SIZE)
        self.pointer_ttl_s = pointer_ttl_s
        self._pointers: dict[str, _Pointed] = {}
        self._last_known: dict[str, ModelPointers | None] = {}
        """Pointers as last read, served when the store is unreachable (stale beats no answer)."""

    def compile(self, definition: JSONObject, key: str, version: int = 0) -> Plan:
        return compile_model(
            definition, key=key, version=version, services=self.services, max_result_bytes=self.max_result_bytes
        )

    # --- lifecycle ------------------------------------------------------------------------------
    async def upload(self, key: str, body: bytes, content_type: str | None) -> JSONObject:
        """Validate, compile and store a new draft version. Invalid models are never stored.

        Idempotent by content: uploading a definition identical to a stored version returns that version
        (``created`` false) — so concurrent workers seeding one models directory agree on one version.
        """
        check_key(key)
        definition = parse_document(body, content_type)
        self.compile(definition, key)
        source = "dmn" if definition.get("format") == "dmn" else "native"
        digest = hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()
        version, created = await self.store.model_add_version(key, {"definition": definition, "source": source}, digest)
        self.forget(key)
        if not created:
            doc = await self._require_version(key, version)
            return {"key": key, "version": version, "state": doc["state"], "created": False}
        return {"key": key, "version": version, "state": "draft", "created": True}

    async def validate(self, key: str, body: bytes, content_type: str | None) -> JSONObject:
        definition = parse_document(body, content_type)
        plan = self.compile(definition, key)
        return {"valid": True, "nodes": [{"id": n.id, "kind": n.kind, "deps": sorted(n.deps)} for n in plan.nodes]}

    async def set_state(self, key: str, version: int, state: str) -> JSONObject:
        await self._require_version(key, version)
        pointers = await self.store.model_set_state(key, version, state)
        self.forget(key)
        self._last_known[key] = pointers  # what this process just wrote is known: served if the store goes away
        return _pointers_json(key, pointers)

    async def rollback(self, key: str, version: int | None) -> JSONObject:
        pointers = await self.pointers(key)
        if pointers is None:
            raise NotFound(f"no model '{key}'")
        target = version if version is not None else rollback_target(pointers)
        return await self.set_state(key, target, "production")

    async def describe(self, key: str) -> JSONObject:
        pointers = await self.store.model_pointers(key)
        if pointers is None:
            raise NotFound(f"no model '{key}'")
        out = _pointers_json(key, pointers)
        out["versions"] = await self.store.model_list_versions(key)
        return out

    async def list(self) -> list[JSONObject]:
        out = []
        for key in await self.store.model_keys():
            pointers = await self.store.model_pointers(key)
            if pointers is not None:
                out.append(_pointers_json(key, pointers))
        return out

    async def version_document(self, key: str, version: int) -> JSONObject:
        return await self._require_version(key, version)

    # --- the decide path ------------------------------------------------------------------------
    async def pointers(self, key: str) -> ModelPointers | None:
        return (await self._pointed(key)).pointers

    async def _pointed(self, key: str) -> _Pointed:
        hit = self._pointers.get(key)
        if hit is not None and time.monotonic() < hit.expires_s:
            return hit
        try:
            pointers = await self.store.model_pointers(key)
        except Unavailable:
            # Only a model known to be there: "no such model" from a read before its publish (a worker seeding the
            # models directory reads first) would turn an outage into 404s rather than 503s.
            if self._last_known.get(key) is not None:
                # Kept for a TTL like a read: asking an unreachable store on every request would add its timeout
                # to every decision of the outage.
                entry = self._pointers[key] = _Pointed(time.monotonic() + self.pointer_ttl_s, self._last_known[key])
                return entry
            raise
        if len(self._pointers) >= POINTER_CACHE_SIZE:
            self._pointers.clear()
        entry = self._pointers[key] = _Pointed(time.monotonic() + self.pointer_ttl_s, pointers)
        self._last_known[key] = pointers
        return entry

    async def plan(self, key: str, version: int) -> Plan:
        plan = self._plans.get((key, version))
        if plan is None:
            doc = await self._require_version(key, version)
            plan = self.compile(doc["definition"], key, version)
            self._plans[(key, version)] = plan
        return plan

    async def production(self, key: str) -> tuple[Plan, Plan | None]:
        """The plan serving ``key`` and, if one is in test, the shadow plan to evaluate beside it."""
        entry = await self._pointed(key)
        if entry.serving is not None:
            return entry.serving
        pointers = entry.pointers
        if pointers is None or pointers.production is None:
            raise NotFound(f"no model '{key}' in production", pointer="/model")
        shadow = await self.plan(key, pointers.test) if pointers.test is not None else None
        serving = (await self.plan(key, pointers.production), shadow)
        if self._pointers.get(key) is entry:  # not forgotten while the plans compiled
            self._pointers[key] = entry._replace(serving=serving)
        return serving

    async def resolve(self, key: str, version: int | None) -> Plan:
        """A given version, or production, or else the latest version (for testing drafts)."""
        if version is None:
            pointers = await self.pointers(key)
            if pointers is None:
                raise NotFound(f"no model '{key}'")
            version = pointers.production or pointers.latest
        return await self.plan(key, version)

    async def follow_changes(self) -> None:
        """Drop cached pointers as peers announce changes, so a publish reaches every process at once.

        The pointer TTL stays as the backstop for a missed message (pub/sub is fire-and-forget).
        """

        async def changed(key: str) -> None:
            self.forget(key)

        await notices.follow(self.store.model_changes, changed, "model")

    def forget(self, key: str) -> None:
        self._pointers.pop(key, None)

    async def _require_version(self, key: str, version: int) -> JSONObject:
        if version < 1:
            raise BadRequest("versions start at 1", pointer="/version")
        doc = await self.store.model_get_version(key, version)
        if doc is None:
            raise NotFound(f"model '{key}' has no version {version}")
        return doc


def _pointers_json(key: str, p: ModelPointers) -> JSONObject:
    return {"key": key, "production": p.production, "test": p.test, "latest": p.latest, "history": list(p.history)}
