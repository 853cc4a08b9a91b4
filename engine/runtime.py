"""Application state, owned by the Starlette lifespan and passed explicitly (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import Request

from engine.config import Settings
from engine.metrics import Metrics
from engine.recorder import Recorder
from engine.registry import Registry
from engine.store import Store


@dataclass(slots=True)
class Runtime:
    settings: Settings
    store: Store
    registry: Registry
    metrics: Metrics
    recorder: Recorder
    rng: np.random.Generator
    services: dict[str, Any] = field(default_factory=dict)
    """Feature services (events, experiments, HTTP pool…) registered at start-up by name."""


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt
