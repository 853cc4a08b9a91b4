"""Admin API for experiments (define, start, pause, stop, results) and the storefront's reward call."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api.bodies import as_object, optional, read_json
from engine.api.responses import json_response
from engine.auth import require_admin, require_public
from engine.errors import BadRequest, NotFound
from engine.experiments import Experiment
from engine.lab import RESOURCE, Lab, lab_of
from engine.results import analyse, results_rng
from engine.rewards import on_event, reward_decision
from engine.runtime import runtime

ACTIONS = {"start": "running", "pause": "paused", "stop": "stopped"}


def _admin(request: Request) -> Lab:
    rt = runtime(request)
    require_admin(request, rt.settings)
    return lab_of(rt)


def describe(lab: Lab, exp: Experiment) -> dict[str, object]:
    alloc = lab.allocations.get(exp.key)
    now = None
    if alloc is not None:
        now = {"epoch": alloc.epoch, "weights": dict(zip(exp.arm_ids, alloc.weights, strict=True))}
    return {**exp.definition, "allocation_now": now}


async def list_experiments(request: Request) -> Response:
    lab = _admin(request)
    docs = await lab.rt.store.resource_list(RESOURCE)
    return json_response(
        {
            "experiments": [
                {k: d.get(k) for k in ("key", "status", "revision")}
                | {"mode": d.get("allocation", {}).get("mode", "fixed")}
                for d in docs
            ]
        }
    )


async def put_experiment(request: Request) -> Response:
    lab = _admin(request)
    key = request.path_params["key"]
    body = as_object(await read_json(request, lab.rt.settings.max_body_bytes), "")
    existed = await lab.rt.store.resource_get(RESOURCE, key) is not None
    exp = await lab.put(key, body)
    return json_response(describe(lab, exp), 200 if existed else 201, headers={"Location": f"/v1/experiments/{key}"})


async def get_experiment(request: Request) -> Response:
    lab = _admin(request)
    return json_response(describe(lab, lab.get(request.path_params["key"])))


async def delete_experiment(request: Request) -> Response:
    lab = _admin(request)
    await lab.delete(request.path_params["key"])
    return Response(status_code=204)


async def set_status(request: Request) -> Response:
    """``start`` / ``pause`` / ``stop`` (stop may name the ``winner`` served from then on)."""
    lab = _admin(request)
    exp = lab.get(request.path_params["key"])
    body = as_object(await read_json(request, lab.rt.settings.max_body_bytes, allow_empty=True), "")
    status = ACTIONS.get(request.path_params["action"])
    if status is None:
        raise NotFound(f"no action '{request.path_params['action']}'; one of {', '.join(ACTIONS)}")
    doc = {**exp.definition, "status": status}
    winner = optional(body, "winner", str, "")
    if winner is not None:
        doc["winner"] = winner
    return json_response(describe(lab, await lab.put(exp.key, doc)))


async def results(request: Request) -> Response:
    lab = _admin(request)
    exp = lab.get(request.path_params["key"])
    await lab.flush()
    per_epoch = await lab.ledger.by_epoch(exp.key, exp.arm_ids)
    weights = await lab.ledger.epochs(exp.key)
    return json_response(analyse(exp, per_epoch, weights, results_rng(exp)))


async def reward(request: Request) -> Response:
    """``{decision_id, value?}``: the decision's exposure earns a reward, once, within the window."""
    rt = runtime(request)
    require_public(request, rt.settings)
    lab = lab_of(rt)
    exp = lab.get(request.path_params["key"])
    body = as_object(await read_json(request, rt.settings.max_body_bytes), "")
    decision_id = optional(body, "decision_id", str, "")
    if not decision_id:
        raise BadRequest("'decision_id' is required", pointer="/decision_id")
    out = await reward_decision(lab, exp, decision_id, body.get("value"))
    return json_response(out, 202 if out["status"] == "counted" else 200)


async def goal_event(request: Request) -> Response:
    """``{guest_ref, event}``: run an event through the experiments' goal matching (back-office imports,
    and the path the events feature takes through :func:`engine.rewards.on_event`)."""
    lab = _admin(request)
    body = as_object(await read_json(request, lab.rt.settings.max_body_bytes), "")
    guest_ref = optional(body, "guest_ref", str, "")
    if not guest_ref:
        raise BadRequest("'guest_ref' is required", pointer="/guest_ref")
    event = as_object(body.get("event"), "/event")
    return json_response({"attributed": await on_event(lab.rt, guest_ref, event)})


routes = [
    Route("/v1/experiments", list_experiments, methods=["GET"]),
    Route("/v1/experiments/_events", goal_event, methods=["POST"]),
    Route("/v1/experiments/{key}", put_experiment, methods=["PUT"]),
    Route("/v1/experiments/{key}", get_experiment, methods=["GET"]),
    Route("/v1/experiments/{key}", delete_experiment, methods=["DELETE"]),
    Route("/v1/experiments/{key}/results", results, methods=["GET"]),
    Route("/v1/experiments/{key}/rewards", reward, methods=["POST"]),
    Route("/v1/experiments/{key}/{action:str}", set_status, methods=["POST"]),
]
