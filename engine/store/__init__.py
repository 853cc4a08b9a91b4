"""Persistence: pick a backend from settings."""

from __future__ import annotations

from engine.config import Settings
from engine.store.base import DecisionRecord, GuestLookup, ModelPointers, Store, StoredEvents, empty_guest
from engine.store.memory import MemoryStore

__all__ = ["DecisionRecord", "GuestLookup", "ModelPointers", "Store", "StoredEvents", "empty_guest", "open_store"]


def open_store(settings: Settings) -> Store:
    if settings.redis_url:
        from engine.store.redis import RedisStore

        return RedisStore(
            settings.redis_url, decision_log_maxlen=settings.decision_log_maxlen, timeout_ms=settings.redis_timeout_ms
        )
    return MemoryStore(decision_log_maxlen=settings.decision_log_maxlen)
