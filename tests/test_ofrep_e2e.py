"""OFREP end to end: the real OpenFeature Python SDK with the OFREP provider against a real server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from tests.conftest import running_arbiter

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer ofrep-admin"}
PUBLIC = {"Authorization": "Bearer ofrep-public"}
HERO_ARMS = {"classic", "bold", "story"}


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_arbiter(tmp_path, keys=("ofrep-admin", "ofrep-public"), redis_url=redis_url) as base:
        yield base


@pytest.fixture
def client(server: str) -> Iterator[object]:
    api.set_provider(OFREPProvider(server, headers_factory=lambda: dict(PUBLIC)))
    yield api.get_client()
    api.clear_providers()


def test_sdk_reads_the_demo_bandit_as_an_object_flag(client, server: str) -> None:  # type: ignore[no-untyped-def]
    details = client.get_object_details("hero-banner", {}, EvaluationContext(targeting_key="guest-42"))
    assert details.error_code is None, details.error_message
    assert details.variant in HERO_ARMS and str(details.reason).endswith("SPLIT")
    assert set(details.value) == {"image", "headline", "cta"}
    meta = details.flag_metadata
    assert meta["experiment"] == "hero-banner" and 0 < meta["propensity"] <= 1 and meta["decision_id"]
    # The decision id in the metadata is what the app sends back as the reward.
    r = httpx.post(
        f"{server}/v1/experiments/hero-banner/rewards", headers=PUBLIC, json={"decision_id": meta["decision_id"]}
    )
    assert r.json()["status"] == "counted" and r.json()["arm"] == details.variant


def test_fixed_split_flag_is_sticky_per_targeting_key(client, server: str) -> None:  # type: ignore[no-untyped-def]
    httpx.put(
        f"{server}/v1/experiments/checkout-button",
        headers=ADMIN,
        json={
            "status": "running",
            "arms": [{"id": "green", "payload": "#0a0"}, {"id": "blue", "payload": "#00a"}],
        },
    ).raise_for_status()
    seen = {}
    for i in range(40):
        ctx = EvaluationContext(targeting_key=f"guest-{i}")
        first = client.get_string_details("checkout-button", "#000", ctx)
        assert first.error_code is None, first.error_message
        assert client.get_string_details("checkout-button", "#000", ctx).variant == first.variant
        seen[first.variant] = first.value
    assert seen == {"green": "#0a0", "blue": "#00a"}


def test_sdk_sees_ofrep_errors(client) -> None:  # type: ignore[no-untyped-def]
    missing = client.get_string_details("no-such-flag", "fallback", EvaluationContext(targeting_key="g"))
    assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    no_key = client.get_object_details("hero-banner", {"x": 1}, EvaluationContext())
    assert (no_key.value, no_key.error_code) == ({"x": 1}, ErrorCode.TARGETING_KEY_MISSING)


def test_decision_model_as_a_flag(client) -> None:  # type: ignore[no-untyped-def]
    details = client.get_object_details("next-best-offer", {}, EvaluationContext("3f1c9a", {"channel": "WEB"}))
    assert details.error_code is None, details.error_message
    assert details.value["offer"] == "welcome-10" and details.flag_metadata["model"] == "next-best-offer"


def test_bulk_evaluation_etag_and_error_shapes(server: str) -> None:
    body = {"context": {"targetingKey": "guest-7"}}
    r = httpx.post(f"{server}/ofrep/v1/evaluate/flags", headers=PUBLIC, json=body)
    assert r.status_code == 200 and r.headers["etag"]
    flags = {f["key"]: f for f in r.json()["flags"]}
    assert flags["hero-banner"]["variant"] in HERO_ARMS
    again = httpx.post(
        f"{server}/ofrep/v1/evaluate/flags", headers={**PUBLIC, "If-None-Match": r.headers["etag"]}, json=body
    )
    assert again.status_code == 304 and again.content == b""
    bad = httpx.post(f"{server}/ofrep/v1/evaluate/flags/hero-banner", headers=PUBLIC, content=b"{oops")
    assert bad.status_code == 400 and bad.json()["errorCode"] == "PARSE_ERROR" and bad.json()["key"] == "hero-banner"
    ctx = httpx.post(f"{server}/ofrep/v1/evaluate/flags/hero-banner", headers=PUBLIC, json={"context": []})
    assert ctx.status_code == 400 and ctx.json()["errorCode"] == "INVALID_CONTEXT"
    assert httpx.post(f"{server}/ofrep/v1/evaluate/flags/hero-banner", json=body).status_code == 401
