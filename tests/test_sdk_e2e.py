"""The real Sitecore Cloud SDK (npm, 0.6.x) against a real ``arbiter serve`` process, on both stores.

Node runs the SDK server side (as its README documents for SSR): browser id bootstrap and cookies, VIEW,
ADD, a custom event, IDENTITY, then a personalize call whose answer is decided from those events.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, running_arbiter

SDK = ROOT / "tests" / "sdk"


@pytest.fixture(scope="session")
def sdk_installed() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the SDK end-to-end test needs Node 18+ and npm (make node-deps)")
    if not (SDK / "node_modules" / "@sitecore-cloudsdk" / "events").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SDK, check=True, capture_output=True)
    return Path(node)


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with running_arbiter(tmp_path, models=SDK / "models", redis_url=redis_url,
                         env={"ARBITER_CONTEXT_IDS": "ctx-e2e=shop"}) as base:  # fmt: skip
        yield base


@pytest.mark.e2e
def test_the_cloud_sdk_works_unchanged(server: str, sdk_installed: Path) -> None:
    done = subprocess.run(
        [str(sdk_installed), "run.cjs", server, "ctx-e2e", "welcome-banner"],
        cwd=SDK, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    cookies = dict(c.split("=", 1) for c in report["cookies"])
    browser_id = cookies["sc_cid"]
    assert cookies["sc_cid_personalize"] == browser_id  # an anonymous guest's ref is its browser id
    for name in ("view", "add", "custom", "identity"):
        assert report[name]["status"] == "OK" and report[name]["version"] == "1.2", report[name]
        assert report[name]["customer_ref"] == browser_id
    # The second page load reuses the browser's cookies instead of minting a new browser.
    assert dict(c.split("=", 1) for c in report["second_cookies"])["sc_cid"] == browser_id
    assert report["personalize"] == {
        "variantId": "cart-rescue", "cartValue": 499, "known": True, "firstName": "Ada", "events": 4,
    }  # fmt: skip
    admin = {"Authorization": "Bearer e2e-admin"}
    guest = httpx.get(f"{server}/v1/guests", params={"provider": "email", "id": "ada@example.com"}, headers=admin)
    assert guest.status_code == 200 and guest.json()["ref"] == browser_id
    events = [e for s in guest.json()["sessions"] for e in s["events"]]
    assert [e["type"] for e in events] == ["VIEW", "ADD", "WISHLIST_ADD", "IDENTITY"]
    assert events[2]["ext"] == {"item": "tv-55", "reason_kind": "gift"}  # the SDK flattens extension data
    assert guest.json()["sessions"][0]["pos"] == "shop"  # the context id's point of sale
