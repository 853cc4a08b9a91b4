"""The cached :class:`Draw` answers as the general path does: :func:`pick` walked over the weights per request."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.assignment import (
    DEFAULT,
    SPLIT,
    TARGETING_MATCH,
    Allocation,
    Choice,
    assign,
    bucket,
    make_draw,
    pick,
    unit_interval,
)
from engine.experiments import compile_experiment

GUESTS = [f"guest-{i}" for i in range(3000)]


def experiment(mode: str = "fixed", weights: tuple[float, ...] = (1, 2, 7)):  # type: ignore[no-untyped-def]
    doc = {
        "status": "running",
        "arms": [{"id": k, "weight": w, "payload": {"k": k}} for k, w in zip("abc", weights, strict=True)],
        "allocation": {"mode": mode},
    }
    return compile_experiment(doc, "draw")


def reference(exp, alloc, unit, guest, eligible, rng):  # type: ignore[no-untyped-def]
    """The general path, as assign walked it before draws were cached."""
    candidates = [i for i, a in enumerate(exp.arms) if (eligible is None or a.id in eligible) and alloc.weights[i] > 0]
    if not candidates:
        return "default"
    weights = [alloc.weights[i] for i in candidates]
    total = sum(weights)

    def choice(i: int, propensity: float, reason: str) -> Choice:
        return Choice(exp.key, exp.arms[i].id, exp.arms[i].payload, propensity, reason, alloc.epoch)

    if len(candidates) == 1:
        return choice(candidates[0], 1.0, TARGETING_MATCH)
    entry = guest.get("assignments", {}).get(exp.key)
    kept = exp.index.get(entry["arm"]) if entry else None
    if exp.mode == "fixed" and kept is not None and kept in candidates:
        return choice(kept, alloc.weights[kept] / total, SPLIT)
    if exp.mode == "fixed":
        u = (bucket(exp.seed, "arm", unit, exp.buckets) + 0.5) / exp.buckets
    else:
        u = unit_interval(exp.seed, "arm", f"{unit}|{alloc.epoch}")
    j = pick(weights, u)
    return choice(candidates[j], weights[j] / total, SPLIT)


WEIGHTS = [(0.5, 0.3, 0.2), (1.0, 0.0, 2.0), (0.0, 0.0, 1.0), (1e-300, 1.0, 1e-300), (0.1, 0.2, 0.7)]
ELIGIBLE = [None, frozenset(), frozenset({"a"}), frozenset({"a", "c"}), frozenset({"b", "c", "zz"})]


@pytest.mark.parametrize("mode", ["fixed", "bandit"])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("eligible", ELIGIBLE, ids=lambda e: "none" if e is None else "-".join(sorted(e)) or "empty")
def test_assign_through_the_draw_answers_as_the_general_path(
    mode: str, weights: tuple[float, ...], eligible: frozenset[str] | None
) -> None:
    exp = experiment(mode)
    alloc = Allocation("4.2", weights)
    rng = np.random.default_rng(0)
    for i, g in enumerate(GUESTS):
        guest = {"assignments": {exp.key: {"arm": "abc"[i % 3]}}} if i % 5 == 0 else {}
        want = reference(exp, alloc, g, guest, eligible, rng)
        got = assign(exp, alloc, g, guest, {}, eligible, rng)
        # A set (not hashable) takes the uncached path: it must answer the same.
        uncached = assign(exp, alloc, g, guest, {}, None if eligible is None else set(eligible), rng)
        assert got == uncached
        if want == "default":
            assert got.reason == DEFAULT
        else:
            assert got == want, (g, weights, eligible)


@pytest.mark.parametrize(
    "weights", [*WEIGHTS, (3.0, 1.0), (1.0,), (math.inf, 1.0), (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)]
)
def test_draw_index_is_pick_at_every_boundary(weights: tuple[float, ...]) -> None:
    arms = [{"id": f"x{i}", "weight": 1} for i in range(len(weights))]
    exp = compile_experiment({"status": "running", "arms": arms, "allocation": {"mode": "bandit"}}, "edges")
    draw = make_draw(exp, Allocation("1", weights), None)
    kept = [w for w in weights if w > 0]
    total = sum(kept)
    us = [0.0, 1.0, math.nextafter(1.0, 0.0), *np.random.default_rng(7).random(2000).tolist()]
    acc = 0.0
    for w in kept:  # exactly on, and either side of, each cumulative boundary
        acc += w
        if math.isfinite(acc / total):
            b = acc / total
            us += [b, math.nextafter(b, 0.0), math.nextafter(b, 2.0)]
    for u in us:
        assert draw.pick(u) == pick(kept, u), (weights, u)
