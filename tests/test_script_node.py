"""The script node: compiled at publish, plain values in, typed values out, failures contained."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from engine.errors import ValidationError
from engine.feel import to_feel
from engine.model import compile_model
from engine.plan import Result
from engine.store import empty_guest
from tests.conftest import ADMIN, PUBLIC

SCORE = """
local WEIGHTS = {gold = 3, silver = 2}
return function(facts, tier, context)
  local score = (WEIGHTS[tier] or 1) * (facts.lifetime_value or 0) / 100
  if context.channel == "WEB" then score = score + 1 end
  return score
end"""


def script(**overrides: Any) -> dict[str, Any]:
    node = {"id": "score", "kind": "script", "returns": "number", "inputs": ["guest.facts", "tier", "context"],
            "source": SCORE}  # fmt: skip
    return {**node, **overrides}


def evaluate(*nodes: dict[str, Any], guest: dict[str, Any] | None = None, **context: Any) -> Result:
    plan = compile_model({"nodes": list(nodes)})
    return plan.evaluate({**empty_guest("g"), **(guest or {})}, context)


TIER = {"id": "tier", "kind": "expression", "expr": '"gold"'}


def test_script_reads_guest_upstream_outputs_and_context() -> None:
    result = evaluate(TIER, script(), guest={"facts": {"lifetime_value": 1200}}, channel="WEB")
    assert result.errors == [] and result.outputs["score"] == 37


def test_feel_numbers_reach_lua_as_numbers() -> None:
    half = {"id": "half", "kind": "expression", "expr": "1.5 * 3"}
    node = script(inputs=["half"], source="return function(x) return {x * 2, math.type(x)} end", returns="list")
    assert evaluate(half, node).outputs["score"] == [9, "float"]


def test_downstream_feel_reads_script_output() -> None:
    node = script(inputs=[], source='return function() return {items = {"a", "b"}, n = 2} end', returns="map")
    total = {"id": "total", "kind": "expression", "expr": "score.n + count(score.items)"}
    assert evaluate(node, total).outputs["total"] == 4


@pytest.mark.parametrize(
    ("returns", "source", "expected"),
    [
        ("string", "return 'x'", "x"),
        ("integer", "return 7.0", 7),
        ("boolean", "return false", False),
        ("list", "return {}", []),
        ("map", "return {}", {}),
        (["number", "null"], "return nil", None),
        ("any", "return {a = {1, 2}}", {"a": [1, 2]}),
    ],
)
def test_declared_return_types(returns: Any, source: str, expected: Any) -> None:
    node = script(inputs=[], returns=returns, source=f"return function() {source} end")
    result = evaluate(node)
    assert result.errors == [] and result.outputs["score"] == expected


def test_wrong_return_type_is_an_error_and_yields_the_fallback() -> None:
    node = script(inputs=[], returns="integer", source="return function() return 2.5 end", fallback=0)
    result = evaluate(node)
    assert result.outputs["score"] == 0
    assert result.errors == [{"node": "score", "error": "score: returned a number (2.5), declared integer"}]


def test_runtime_error_carries_the_lua_line() -> None:
    node = script(inputs=[], source="return function()\n  local x = nil\n  return x.y\nend")
    result = evaluate(node)
    assert result.errors[0]["error"].startswith("score:3: attempt to index a nil value")


def test_runaway_script_is_stopped_and_the_plan_answers() -> None:
    loop = script(inputs=[], source="return function() while true do end end", fallback=-1)
    after = {"id": "after", "kind": "expression", "expr": "score + 1"}
    result = evaluate(loop, after)
    assert result.outputs == {"score": -1, "after": 0}
    assert "instruction budget" in result.errors[0]["error"]


@pytest.mark.parametrize(
    ("overrides", "pointer", "message"),
    [
        ({"source": "return function( end"}, "/nodes/1/source", "does not compile: score:1:"),
        ({"source": 5}, "/nodes/1/source", "wrong type"),
        ({"returns": "float"}, "/nodes/1/returns", "must be a type name"),
        ({"inputs": ["guest.("]}, "/nodes/1/inputs/0", ""),
        ({"budget": 1}, "/nodes/1/budget", "unknown field"),
    ],
)
def test_definition_problems_are_located(overrides: dict[str, Any], pointer: str, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        compile_model({"nodes": [TIER, script(**overrides)]})
    assert any(p.pointer == pointer and message in p.message for p in exc.value.problems), exc.value.problems


def test_the_app_shares_one_sandbox_for_every_model(client: TestClient) -> None:
    rt = client.app.state.rt  # type: ignore[attr-defined]
    first = rt.services["lua"]
    r = client.put("/v1/models/scored?publish=1", content=orjson.dumps({"nodes": [TIER, script()]}), headers=ADMIN)
    assert r.status_code == 201, r.text
    r = client.post("/v1/decide/scored", json={"guest": {"browser_id": "b1"}, "context": {"channel": "WEB"}},
                    headers=PUBLIC)  # fmt: skip
    assert r.status_code == 200 and r.json()["outputs"]["score"] == 1
    assert rt.services["lua"] is first


BOMBS = {
    "loop": "return function() while true do end end",
    "memory": "return function() local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(1000) .. i end end",
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_bombs_are_stopped_and_the_server_keeps_serving(client: TestClient, bomb: str) -> None:
    bad = {"nodes": [script(inputs=[], source=BOMBS[bomb], fallback="stopped", returns="string")]}
    good = {"nodes": [TIER, script()]}
    for key, model in (("bomb", bad), ("good", good)):
        r = client.put(f"/v1/models/{key}?publish=1", content=orjson.dumps(model), headers=ADMIN)
        assert r.status_code == 201, r.text
    for _ in range(3):
        r = client.post("/v1/decide/bomb", json={"guest": {"browser_id": "b1"}}, headers=PUBLIC)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["outputs"]["score"] == "stopped"
        assert "instruction budget" in body["errors"][0]["error"] or "memory limit" in body["errors"][0]["error"]
        r = client.post("/v1/decide/good", json={"guest": {"browser_id": "b1"}, "context": {"channel": "WEB"}},
                        headers=PUBLIC)  # fmt: skip
        assert r.status_code == 200 and r.json()["outputs"]["score"] == 1 and "errors" not in r.json()


class Faulty(dict[str, Any]):
    """A context whose reads raise: an input reading it fails inside the one call that reads every input."""

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("unreadable")


ECHO = """return function(...)
  local out = {}
  for i = 1, select('#', ...) do out['x' .. i] = select(i, ...) end
  return out
end"""


@pytest.mark.parametrize(
    "scope",
    [
        {"guest": {"facts": {"a": 1}}, "tier": {"x": "gold"}, "context": {"now": "2026-01-01"}},
        {"guest": {"facts": {"a": 1}}, "tier": Faulty(x=1), "context": {"now": "2026-01-01"}},
        {"guest": None, "tier": None, "context": {}},
        {"guest": {"facts": [1, 2]}, "tier": {"x": [1, {"y": 2}]}, "context": {"now": 5}},
    ],
)
def test_inputs_read_in_one_call_agree_with_inputs_read_one_by_one(scope: dict[str, Any]) -> None:
    node = script(inputs=["guest.facts", "tier.x", "context.now", "count(guest.facts)"], source=ECHO, returns="map")
    compiled = compile_model({"nodes": [TIER, node]}).nodes[1]
    one_by_one = [e(scope) for e in compiled.inputs.exprs]
    assert compiled.inputs.read(scope) == one_by_one
    if isinstance(scope["tier"], Faulty):  # the one call fails as a whole; each input alone is guarded
        assert compiled.inputs.together.fn(scope) is None and one_by_one[1] is None and one_by_one[0] == {"a": 1}
    assert compiled.evaluate(scope, None) == to_feel(compiled.script(*one_by_one))
