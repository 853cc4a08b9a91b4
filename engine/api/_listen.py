"""The listen feature's services as its API handlers see them (kept apart so the feature can import the routes)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine.batch_import import ImportJob
from engine.guests import Guests
from engine.ingest import Ingest
from engine.runtime import Runtime


@dataclass(slots=True)
class Listen:
    ingest: Ingest
    guests: Guests
    imports: dict[str, ImportJob] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def listen(rt: Runtime) -> Listen:
    service: Listen = rt.services["listen"]
    return service
