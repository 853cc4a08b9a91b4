"""The application's assembly: storefront routes are matched first, without changing what any path reaches."""

from __future__ import annotations

from starlette.routing import Route

from engine.app import create_app, storefront_first
from engine.config import Settings


def test_storefront_routes_come_first_and_keep_their_order() -> None:
    app = create_app(Settings(admin_key="a", public_keys={"p": "default"}))
    paths = [str(getattr(r, "path", "")) for r in app.router.routes]
    assert paths[:2] == ["/v1/decide/{model_key}", "/v1/events"]
    first_admin = paths.index("/health")
    assert all(
        p.startswith(("/v1/decide/", "/v1/events", "/v1.2/", "/v1/personalize", "/v2/", "/ofrep/"))
        for p in paths[:first_admin]
    )
    assert "/v1/models" in paths[first_admin:] and "/v1/experiments/{key}" in paths[first_admin:]


def test_the_reordering_is_stable() -> None:
    def endpoint() -> None: ...

    routes = [Route(p, endpoint) for p in ("/a", "/v1/events/x", "/b", "/v1/events", "/ofrep/y")]
    assert [r.path for r in storefront_first(list(routes))] == ["/v1/events/x", "/v1/events", "/ofrep/y", "/a", "/b"]
