"""Experiment definitions: the admin's JSON document, validated and compiled once into an :class:`Experiment`.

A definition (``PUT /v1/experiments/{key}``)::

    {"key": "hero-banner", "status": "running",
     "arms": [{"id": "classic", "payload": {...}}, {"id": "bold", "weight": 2}],
     "control": "classic",
     "goal": {"event": "ORDER_CHECKOUT", "type": "binary"},        # or type revenue with "value": "order.total"
     "attribution_window_s": 86400, "default_reward": 0,
     "allocation": {"mode": "bandit", "exploration_floor": 0.01, "burn_in_exposures": 100,
                    "top_two": null, "epoch_s": 60},                  # or {"mode": "fixed"}: arms' weights
     "targeting": "context.channel = \\"WEB\\"", "traffic_pct": 100, "holdout_pct": 0,
     "layer": {"id": "homepage", "range": [0, 5000]}, "bucketing": "standard",   # or "universal" (120)
     "mde": 0.1, "alpha": 0.05, "power": 0.8, "winner": null}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.assignment import DEFAULT_BUCKETS, LAYER_BUCKETS, UNIVERSAL_BUCKETS
from engine.bandit import Policy
from engine.errors import FeelError, Problem, ValidationError
from engine.feel import Expression, compile_expression
from engine.guestreads import reads_assignments, reads_session_events
from engine.model import KEY_PATTERN
from engine.types import JSONObject

ARM_FIELDS = ("id", "name", "payload", "weight")
STATUSES = ("draft", "running", "paused", "stopped")
GOAL_TYPES = ("binary", "revenue")
MODES = ("fixed", "bandit")
REWARD_ONLY = "reward"
"""Goal event meaning "only explicit reward calls count"."""
TOP_LEVEL = frozenset(
    {
        "key",
        "name",
        "description",
        "status",
        "arms",
        "control",
        "goal",
        "attribution_window_s",
        "default_reward",
        "allocation",
        "targeting",
        "traffic_pct",
        "holdout_pct",
        "layer",
        "bucketing",
        "seed",
        "mde",
        "alpha",
        "power",
        "winner",
        "revision",
        "started_ms",
    }
)


@dataclass(frozen=True, slots=True)
class Arm:
    id: str
    payload: Any
    weight: float


@dataclass(frozen=True, slots=True)
class Experiment:
    key: str
    status: str
    arms: tuple[Arm, ...]
    control: str
    goal_event: str
    goal_type: str
    goal_value_path: tuple[str, ...] | None
    attribution_window_s: int
    mode: str
    policy: Policy
    epoch_s: float
    targeting: Expression | None
    traffic_pct: float
    holdout_pct: float
    layer: str | None
    layer_range: tuple[int, int]
    buckets: int
    seed: str
    mde: float
    alpha: float
    power: float
    winner: str | None
    revision: int
    started_ms: int
    definition: JSONObject
    index: dict[str, int] = field(compare=False)
    reads_session_events: bool = field(default=True, compare=False)
    """Whether its targeting may read a guest's session events (:mod:`engine.guestreads`)."""
    reads_assignments: bool = field(default=True, compare=False)
    """Whether its targeting may read a guest's experiment assignments (:mod:`engine.guestreads`)."""

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.arms)

    @property
    def weights(self) -> tuple[float, ...]:
        total = sum(a.weight for a in self.arms)
        return tuple(a.weight / total for a in self.arms)


class _Checker:
    def __init__(self, doc: JSONObject) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def get(self, obj: JSONObject, key: str, types: type | tuple[type, ...], default: Any, pointer: str) -> Any:
        value = obj.get(key, default)
        if value is None:
            return default
        bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if not isinstance(value, types) or bad_bool:
            self.problems.append(Problem(f"{pointer}/{key}", f"'{key}' has the wrong type ({type(value).__name__})"))
            return default
        return value

    def number(self, obj: JSONObject, key: str, default: float, lo: float, hi: float, pointer: str) -> float:
        value = self.get(obj, key, (int, float), default, pointer)
        if not lo <= value <= hi:
            self.problems.append(Problem(f"{pointer}/{key}", f"'{key}' must be between {lo} and {hi}"))
            return default
        return float(value)


def compile_experiment(doc: Any, key: str) -> Experiment:
    """Validate ``doc`` and compile it; raise :class:`ValidationError` listing every located problem."""
    if not isinstance(doc, dict):
        raise ValidationError([Problem("", "an experiment is a JSON object")])
    c = _Checker(doc)
    if not KEY_PATTERN.match(key):
        c.problems.append(Problem("/key", "letters, digits, '-', '_', '.', at most 128 characters"))
    c.problems += [Problem(f"/{k}", f"unknown field '{k}'") for k in doc if k not in TOP_LEVEL]
    status = c.get(doc, "status", str, "draft", "")
    if status not in STATUSES:
        c.problems.append(Problem("/status", f"one of {', '.join(STATUSES)}"))
    arms = _arms(c)
    ids = [a.id for a in arms]
    control = c.get(doc, "control", str, ids[0] if ids else "", "")
    if ids and control not in ids:
        c.problems.append(Problem("/control", f"'{control}' is not an arm"))
    winner = c.get(doc, "winner", str, None, "")
    if winner is not None and winner not in ids:
        c.problems.append(Problem("/winner", f"'{winner}' is not an arm"))
    goal_event, goal_type, value_path = _goal(c)
    policy, mode, epoch_s = _allocation(c, goal_type, len(arms))
    layer_id, layer_range = _layer(c)
    bucketing = c.get(doc, "bucketing", str, "standard", "")
    if bucketing not in ("standard", "universal"):
        c.problems.append(Problem("/bucketing", "'standard' (10,000 buckets) or 'universal' (120)"))
    experiment = Experiment(
        key=key,
        status=status,
        arms=tuple(arms),
        control=control,
        goal_event=goal_event,
        goal_type=goal_type,
        goal_value_path=tuple(value_path.split(".")) if value_path else None,
        attribution_window_s=int(c.number(doc, "attribution_window_s", 7 * 86400, 1, 400 * 86400, "")),
        mode=mode,
        policy=policy,
        epoch_s=epoch_s,
        targeting=_targeting(c),
        reads_session_events=reads_session_events(doc.get("targeting")),
        reads_assignments=reads_assignments(doc.get("targeting")),
        traffic_pct=c.number(doc, "traffic_pct", 100.0, 0.0, 100.0, ""),
        holdout_pct=c.number(doc, "holdout_pct", 0.0, 0.0, 100.0, ""),
        layer=layer_id,
        layer_range=layer_range,
        buckets=UNIVERSAL_BUCKETS if bucketing == "universal" else DEFAULT_BUCKETS,
        seed=c.get(doc, "seed", str, key, ""),
        mde=c.number(doc, "mde", 0.1, 1e-6, 100.0, ""),
        alpha=c.number(doc, "alpha", 0.05, 1e-6, 0.5, ""),
        power=c.number(doc, "power", 0.8, 0.05, 1 - 1e-6, ""),
        winner=winner,
        revision=int(c.get(doc, "revision", int, 0, "")),
        started_ms=int(c.get(doc, "started_ms", int, 0, "")),
        definition={**doc, "key": key},
        index={a.id: i for i, a in enumerate(arms)},
    )
    if c.problems:
        raise ValidationError(c.problems)
    return experiment


def _goal(c: _Checker) -> tuple[str, str, str | None]:
    goal = c.get(c.doc, "goal", dict, {}, "")
    goal_event = c.get(goal, "event", str, REWARD_ONLY, "/goal")
    goal_type = c.get(goal, "type", str, "binary", "/goal")
    if goal_type not in GOAL_TYPES:
        c.problems.append(Problem("/goal/type", f"one of {', '.join(GOAL_TYPES)}"))
    return goal_event, goal_type, c.get(goal, "value", str, None, "/goal")


def _allocation(c: _Checker, goal_type: str, n_arms: int) -> tuple[Policy, str, float]:
    default_reward = c.number(c.doc, "default_reward", 0.0, -1e12, 1e12, "")
    if goal_type == "binary" and default_reward not in (0.0, 1.0):
        c.problems.append(Problem("/default_reward", "a conversion goal's default reward is 0 or 1"))
    alloc = c.get(c.doc, "allocation", dict, {}, "")
    mode = c.get(alloc, "mode", str, "fixed", "/allocation")
    if mode not in MODES:
        c.problems.append(Problem("/allocation/mode", f"one of {', '.join(MODES)}"))
    floor = c.number(alloc, "exploration_floor", 0.01, 0.0, 1.0, "/allocation")
    if floor * n_arms > 1:
        c.problems.append(Problem("/allocation/exploration_floor", "the floor times the number of arms exceeds 1"))
    top_two = c.get(alloc, "top_two", (int, float), None, "/allocation")
    if top_two is not None and not 0 < top_two < 1:
        c.problems.append(Problem("/allocation/top_two", "the leader's share, strictly between 0 and 1"))
        top_two = None
    burn_in = int(c.number(alloc, "burn_in_exposures", 100, 0, 1e9, "/allocation"))
    policy = Policy(goal_type, floor, burn_in, float(top_two) if top_two is not None else None, default_reward)
    return policy, mode, c.number(alloc, "epoch_s", 60.0, 0.05, 7 * 86400, "/allocation")


def _targeting(c: _Checker) -> Expression | None:
    text = c.get(c.doc, "targeting", str, None, "")
    if not text:
        return None
    try:
        targeting = compile_expression(text, names={"guest", "context"})
    except FeelError as exc:
        c.problems.append(Problem("/targeting", f"{exc.detail} in {text!r}"))
        return None
    if not targeting.references <= {"guest", "context"}:
        c.problems.append(Problem("/targeting", "targeting may read only 'guest' and 'context'"))
    return targeting


def _arms(c: _Checker) -> list[Arm]:
    raw = c.doc.get("arms")
    if not isinstance(raw, list) or not raw:
        c.problems.append(Problem("/arms", "an experiment needs a non-empty list of arms"))
        return []
    arms: list[Arm] = []
    seen: set[str] = set()
    for i, a in enumerate(raw):
        p = f"/arms/{i}"
        if not isinstance(a, dict) or not isinstance(a.get("id"), str) or not a["id"]:
            c.problems.append(Problem(f"{p}/id", "an arm needs a non-empty string 'id'"))
            continue
        if a["id"] in seen:
            c.problems.append(Problem(f"{p}/id", f"duplicate arm id '{a['id']}'"))
        seen.add(a["id"])
        c.problems += [Problem(f"{p}/{k}", f"unknown field '{k}'") for k in a if k not in ARM_FIELDS]
        weight = c.number(a, "weight", 1.0, 0.0, 1e9, p)
        arms.append(Arm(a["id"], a.get("payload"), weight))
    if arms and sum(a.weight for a in arms) <= 0:
        c.problems.append(Problem("/arms", "at least one arm needs a positive weight"))
    return arms


def _layer(c: _Checker) -> tuple[str | None, tuple[int, int]]:
    layer = c.get(c.doc, "layer", dict, None, "")
    if layer is None:
        return None, (0, LAYER_BUCKETS)
    layer_id = c.get(layer, "id", str, None, "/layer")
    if not layer_id:
        c.problems.append(Problem("/layer/id", "a layer needs a string 'id'"))
    rng = layer.get("range", [0, LAYER_BUCKETS])
    ints = isinstance(rng, list) and len(rng) == 2 and all(type(x) is int for x in rng)
    if not ints or not 0 <= rng[0] < rng[1] <= LAYER_BUCKETS:
        c.problems.append(Problem("/layer/range", f"[lo, hi) with 0 <= lo < hi <= {LAYER_BUCKETS}"))
        return layer_id, (0, LAYER_BUCKETS)
    return layer_id, (rng[0], rng[1])


def overlapping(a: Experiment, b: Experiment) -> bool:
    """Whether two experiments of one layer claim some of the same layer buckets."""
    if a.layer is None or a.layer != b.layer:
        return False
    return a.layer_range[0] < b.layer_range[1] and b.layer_range[0] < a.layer_range[1]
