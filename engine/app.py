"""The Starlette application: routes, error handlers, and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from engine import batching
from engine.api import decide, models, ops
from engine.api.problems import HANDLERS, handler_for
from engine.config import Settings
from engine.errors import ArbiterError
from engine.features import FEATURES
from engine.metrics import Metrics, MetricsMiddleware
from engine.recorder import Recorder
from engine.registry import Registry
from engine.runtime import Runtime
from engine.store import Store, open_store

log = logging.getLogger("arbiter")
MODEL_SUFFIXES = (".json", ".yaml", ".yml", ".dmn")


def read_model_files(directory: Path) -> list[tuple[str, bytes]]:
    """(key, content) of each model file, the key being the file name without its suffix."""
    return [(p.stem, p.read_bytes()) for p in sorted(directory.iterdir()) if p.suffix in MODEL_SUFFIXES and p.is_file()]


async def load_models_dir(registry: Registry, directory: Path) -> list[str]:
    """Seed every model in ``directory`` that has no production version yet, and publish it.

    A model already in production is left alone even if its file differs: the API (publish, rollback) owns
    production once it exists, and a restarting worker must not undo a marketer's publish. Uploads are
    idempotent by content, so workers seeding at the same moment agree on one version.
    """
    loaded = []
    for key, body in await asyncio.to_thread(read_model_files, directory):
        pointers = await registry.pointers(key)
        if pointers is None or pointers.production is None:
            created = await registry.upload(key, body, None)
            if created["state"] != "production":
                await registry.set_state(key, created["version"], "production")
            loaded.append(key)
        # Compiled now rather than on the first request, so the first decisions neither wait for it nor, if the
        # store goes away in between, find no plan to serve. A model that fails here fails its requests as before.
        try:
            await registry.production(key)
        except ArbiterError as exc:
            log.warning("model %s not compiled at start-up: %s", key, exc.detail)
    return loaded


def create_app(settings: Settings, *, store: Store | None = None) -> Starlette:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        st = store or open_store(settings)
        services: dict[str, object] = {}
        registry = Registry(
            st, pointer_ttl_s=settings.model_cache_ttl_s, max_result_bytes=settings.max_result_bytes, services=services
        )
        recorder = Recorder(st, metrics)
        rt = Runtime(settings, st, registry, metrics, recorder, np.random.default_rng(), services)
        app.state.rt = rt
        if settings.batch_decisions:
            services[batching.SERVICE] = batching.Batcher(settings.deadline_ms, metrics.decision_batch.observe)
        for feature in FEATURES:
            if hasattr(feature, "startup"):
                await feature.startup(rt)
        if settings.models_dir is not None:
            loaded = await load_models_dir(registry, settings.models_dir)
            log.info("models loaded from %s: %s", settings.models_dir, ", ".join(loaded) or "(all current)")
        recorder.start()
        follower = asyncio.get_running_loop().create_task(registry.follow_changes())
        lag_watch = asyncio.get_running_loop().create_task(metrics.watch_loop_lag())
        # What exists now (modules, compiled models, caches) lives as long as the worker. Moved out of the
        # collector's generations, a full collection no longer walks it: that walk was a pause of ~36 ms
        # in the middle of some request, every few thousand decisions (gc.callbacks, benchmarks/inprocess).
        gc.collect()
        gc.freeze()
        try:
            with metrics.watching_gc():
                yield
        finally:
            follower.cancel()
            lag_watch.cancel()
            # Wait without awaiting the tasks themselves: a cancel Python 3.11 swallows must not hang shutdown.
            await asyncio.wait({follower, lag_watch}, timeout=2)
            for feature in reversed(FEATURES):
                if hasattr(feature, "shutdown"):
                    await feature.shutdown(rt)
            await recorder.stop()
            # Connections belong to this event loop, so they close with it even when the store was handed in
            # (a closed redis-py client reconnects lazily if the store is used again).
            await st.close()

    routes = [*ops.routes, *decide.routes, *models.routes, *(r for f in FEATURES for r in getattr(f, "routes", []))]
    return Arbiter(
        routes=storefront_first(routes),
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
        metrics=metrics,
    )


PER_PAGE = ("/v1/decide/{model_key}", "/v1/events")
"""The routes a storefront calls on every page: served by :class:`Arbiter` without Starlette's layers."""
MATCHED_PATHS = 1024
"""POST paths :class:`Arbiter` remembers the per-page match of (emptied when full: the paths are the client's)."""
_UNMATCHED: Any = object()


class Arbiter(Starlette):
    """Starlette, with the storefront's per-page calls (decide, events) taken before its middleware stack.

    For those two routes Starlette's layers (two error middlewares, the metrics middleware, the router, the
    endpoint wrappers: a coroutine and a send wrapper each, per request) cost more than the route's own
    request handling outside the model (py-spy, see benchmarks/RESULTS.md). Here the same endpoint
    functions are called directly, errors go through the same handlers, and the same request metrics are
    kept. Any other path or method, lifespan included, goes through Starlette unchanged.
    """

    def __init__(self, *, metrics: Metrics, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.metrics = metrics
        self.per_page = [r for r in self.routes if isinstance(r, Route) and r.path in PER_PAGE]
        self._matched: dict[tuple[str, str], tuple[Route, Scope] | None] = {}
        """POST path (and root path) → the per-page route it matched and the scope that adds, or None for none of
        them: a storefront sends a handful of paths, and matching each route's regex was ~1.3 µs a route."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            key = (scope["path"], scope.get("root_path", ""))
            hit = self._matched.get(key, _UNMATCHED)
            if hit is _UNMATCHED:
                hit = self._match(scope, key)
            if hit is not None:
                route, child_scope = hit
                scope["app"] = self
                scope["endpoint"] = child_scope["endpoint"]
                scope["path_params"] = dict(child_scope["path_params"])  # the request's own: handlers may change it
                await self._serve(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _match(self, scope: Scope, key: tuple[str, str]) -> tuple[Route, Scope] | None:
        found = None
        for route in self.per_page:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                found = (route, child_scope)
                break
        if len(self._matched) >= MATCHED_PATHS:  # paths are the client's: bounded
            self._matched.clear()
        self._matched[key] = found
        return found

    async def _serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:  # noqa: BLE001 — the handlers turn every error into problem+json (500: logged)
            response = await handler_for(exc)(request, exc)
        try:
            await response(scope, receive, send)
        finally:
            self.metrics.observe_request(route.name, "POST", response.status_code, time.perf_counter() - t0)


STOREFRONT_PREFIXES = ("/v1/decide/", "/v1/events", "/v1.2/", "/v1/personalize", "/v2/callFlows", "/ofrep/")
"""Paths storefronts call on every page: matched first."""


def storefront_first(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Starlette tries routes in order, one regex each: the events route sat 19th of 48, and matching cost
    3.5 % of a saturated events worker (py-spy). Stable, so routes that could overlap keep their order."""

    def hot(route: BaseRoute) -> bool:
        return str(getattr(route, "path", "")).startswith(STOREFRONT_PREFIXES)

    return [r for r in routes if hot(r)] + [r for r in routes if not hot(r)]


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (each worker process builds its app from the environment)."""
    return create_app(Settings.from_env())
