"""The embedded store: everything in this process's memory.

The default for ``make run`` and single-process demos. Atomicity comes for free: no method awaits
between reading and writing, so on one event loop every method is a transaction.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson

from engine.lifecycle import transition
from engine.store.base import DecisionRecord, GuestLookup, ModelPointers
from engine.types import JSONObject


class MemoryStore:
    name = "memory"

    def __init__(self, *, decision_log_maxlen: int = 100_000) -> None:
        self._versions: dict[str, dict[int, JSONObject]] = {}
        self._pointers: dict[str, ModelPointers] = {}
        self._guests: dict[str, JSONObject] = {}
        self._identifiers: dict[tuple[str, str], str] = {}
        self._decisions: deque[JSONObject] = deque(maxlen=decision_log_maxlen)
        self._resources: dict[str, dict[str, JSONObject]] = {}
        self.extra: dict[str, Any] = {}
        """Room for feature modules (events, experiments) to keep their embedded state."""

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    # --- models ---------------------------------------------------------------------------------
    async def model_add_version(self, key: str, document: JSONObject, digest: str) -> tuple[int, bool]:
        versions = self._versions.setdefault(key, {})
        for v, doc in versions.items():
            if doc.get("digest") == digest:
                return v, False
        p = self._pointers.get(key) or ModelPointers(None, None, (), 0)
        version = p.latest + 1
        versions[version] = {
            **document,
            "digest": digest,
            "version": version,
            "state": "draft",
            "created_ms": int(time.time() * 1000),
        }
        self._pointers[key] = ModelPointers(p.production, p.test, p.history, version)
        return version, True

    async def model_get_version(self, key: str, version: int) -> JSONObject | None:
        doc = self._versions.get(key, {}).get(version)
        return copy.deepcopy(doc) if doc is not None else None

    async def model_list_versions(self, key: str) -> list[JSONObject]:
        return [
            {k: v for k, v in doc.items() if k != "definition"}
            for _, doc in sorted(self._versions.get(key, {}).items())
        ]

    async def model_keys(self) -> list[str]:
        return sorted(self._versions)

    async def model_pointers(self, key: str) -> ModelPointers | None:
        return self._pointers.get(key)

    async def model_changes(self) -> AsyncIterator[str]:
        # One process owns the embedded store: nobody else can change a model behind our back.
        await asyncio.Event().wait()
        yield ""

    async def resource_changes(self, kind: str) -> AsyncIterator[str]:
        # As for models: the one process that writes is the one that reads.
        await asyncio.Event().wait()
        yield ""

    async def model_set_state(self, key: str, version: int, state: str) -> ModelPointers:
        versions = self._versions.get(key, {})
        pointers = self._pointers.get(key) or ModelPointers(None, None, (), 0)
        t = transition(pointers, {v: d["state"] for v, d in versions.items()}, version, state)
        for v, s in t.states.items():
            versions[v]["state"] = s
        self._pointers[key] = t.pointers
        return t.pointers

    # --- guests and decisions -------------------------------------------------------------------
    async def guest_load(
        self, lookup: GuestLookup, *, session_events: bool = True, experiments: tuple[str, ...] | None = None
    ) -> JSONObject | None:
        ref = lookup.direct_ref
        if ref is None and lookup.provider and lookup.identifier:
            ref = self._identifiers.get((lookup.provider, lookup.identifier))
        guest = self._guests.get(ref) if ref else None
        if guest is not None and guest.get("type") == "retired" and guest.get("survivor"):
            guest = self._guests.get(guest["survivor"])
        return copy.deepcopy(guest) if guest is not None else None

    async def guest_save(self, ref: str, guest: JSONObject) -> None:
        self._guests[ref] = copy.deepcopy(guest)
        for ident in guest.get("identifiers", []):
            self._identifiers[(ident["provider"], ident["id"])] = ref

    async def decisions_record(self, records: list[DecisionRecord]) -> None:
        # Through JSON, as Redis keeps them: outputs may arrive pre-serialised (an orjson.Fragment).
        self._decisions.extend(orjson.loads(orjson.dumps(r.as_dict(), default=str)) for r in records)

    async def decisions_recent(self, count: int) -> list[JSONObject]:
        return list(self._decisions)[-count:][::-1]

    async def resource_put(self, kind: str, key: str, document: JSONObject) -> None:
        self._resources.setdefault(kind, {})[key] = copy.deepcopy(document)

    async def resource_get(self, kind: str, key: str) -> JSONObject | None:
        doc = self._resources.get(kind, {}).get(key)
        return copy.deepcopy(doc) if doc is not None else None

    async def resource_list(self, kind: str) -> list[JSONObject]:
        return [copy.deepcopy(d) for _, d in sorted(self._resources.get(kind, {}).items())]

    async def resource_delete(self, kind: str, key: str) -> bool:
        return self._resources.get(kind, {}).pop(key, None) is not None
