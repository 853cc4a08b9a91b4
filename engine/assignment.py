"""Deterministic, sticky assignment of guests to experiment arms.

A guest's place in an experiment is a pure function of ``(seed, salt, guest)``: a keyed BLAKE2b hash
mapped onto a bucket space (10,000 buckets by default, 120 in Sitecore's "universal" mode). No state is
read or written to assign, so every engine process agrees on every guest's arm without coordinating.

Three independent hashes (different salts) decide the three questions, so the answers do not correlate:
- ``layer``: where the guest falls in its layer's bucket space; experiments of one layer own disjoint
  ranges of it, which makes them mutually exclusive;
- ``traffic``: whether the guest enters the experiment at all (traffic allocation, holdout);
- ``arm``: which arm, by walking the arms' cumulative weights.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from engine.types import JSONObject

if TYPE_CHECKING:
    from engine.experiments import Experiment

DEFAULT_BUCKETS = 10_000
UNIVERSAL_BUCKETS = 120
"""Sitecore's universal mode: 120 divides evenly by 2, 3, 4, 5, 6, 8, 10 and 12 arms."""
LAYER_BUCKETS = DEFAULT_BUCKETS
_SCALE = float(1 << 64)


def unit_interval(seed: str, salt: str, unit: str) -> float:
    """A uniform number in [0, 1) for ``unit``, fixed by ``seed`` and ``salt``.

    64 bits of a keyed BLAKE2b digest: uniform, independent across seeds and salts, and stable across
    processes and Python versions (unlike ``hash()``, which is salted per process).
    """
    keyed = _KEYED.get((seed, salt))
    if keyed is None:
        if len(_KEYED) >= _MAX_KEYED:
            _KEYED.clear()
        keyed = _KEYED[(seed, salt)] = hashlib.blake2b(digest_size=8, key=seed.encode()[:64], person=salt.encode()[:16])
    digest = keyed.copy()  # copying a keyed state costs half of keying a new one
    digest.update(unit.encode())
    return int.from_bytes(digest.digest(), "big") / _SCALE


_KEYED: dict[tuple[str, str], Any] = {}
"""BLAKE2b states already keyed with (seed, salt): a few per experiment."""
_MAX_KEYED = 4096


def bucket(seed: str, salt: str, unit: str, buckets: int = DEFAULT_BUCKETS) -> int:
    """The bucket in ``[0, buckets)`` that ``unit`` falls into."""
    return int(unit_interval(seed, salt, unit) * buckets)


def pick(weights: Sequence[float], u: float) -> int:
    """Index of the arm whose cumulative-weight interval contains ``u`` (weights need not sum to 1).

    Walking the cumulative weights means a small change in weights moves only the guests near the
    boundaries: most guests keep their arm when a bandit shifts traffic.
    """
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    target = u * total
    acc = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        acc += w
        last = i
        if target < acc:
            return i
    return last  # u * total rounding up to the total: the last arm with weight


def in_range(bucket_index: int, lo: int, hi: int) -> bool:
    """Whether a layer bucket falls in an experiment's half-open range ``[lo, hi)``."""
    return lo <= bucket_index < hi


@dataclass(frozen=True, slots=True)
class Allocation:
    """The arms' weights in one allocation epoch, the same in every process (see ``Ledger.claim_epoch``)."""

    epoch: str
    weights: tuple[float, ...]
    draws: dict[frozenset[str] | None, Draw] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The :class:`Draw` of each eligibility set seen in this epoch: derived from the weights, so built once."""


class Choice(NamedTuple):
    """An arm chosen for one request (a tuple: made per request, in C)."""

    experiment: str
    arm: str | None
    payload: Any
    propensity: float
    """Probability that this request got this arm (1 when nothing was random)."""
    reason: str
    """``SPLIT`` (assigned at random), ``TARGETING_MATCH`` (eligibility left one arm), ``DEFAULT`` (not in the
    experiment: targeting, traffic, layer, holdout, or the experiment is not running)."""
    epoch: str

    @property
    def exposed(self) -> bool:
        return self.reason != DEFAULT and self.arm is not None

    def as_output(self) -> JSONObject:
        return {
            "experiment": self.experiment,
            "arm": self.arm,
            "payload": self.payload,
            "propensity": self.propensity,
            "reason": self.reason,
            "epoch": self.epoch,
        }


SPLIT, TARGETING_MATCH, DEFAULT = "SPLIT", "TARGETING_MATCH", "DEFAULT"


def assign(
    exp: Experiment,
    alloc: Allocation,
    unit: str | None,
    guest: Mapping[str, Any],
    context: Mapping[str, Any],
    eligible: Collection[str] | None,
    rng: np.random.Generator,
) -> Choice:
    """Which arm ``unit`` (the guest ref) gets. Pure apart from ``rng``, which serves only guests with no
    ref (nothing to hash, so nothing to keep sticky)."""
    if exp.status != "running":
        return _default(exp, alloc, eligible)
    if exp.targeting is not None and exp.targeting({"guest": guest, "context": context}) is not True:
        return _default(exp, alloc, eligible)
    if unit is not None and exp.layer is not None:
        if not in_range(bucket(exp.layer, "layer", unit, LAYER_BUCKETS), *exp.layer_range):
            return _default(exp, alloc, eligible)
    if exp.traffic_pct < 100 or exp.holdout_pct > 0:  # else every guest enters: no hash to draw
        traffic_u = unit_interval(exp.seed, "traffic", unit) if unit is not None else float(rng.random())
        if exp.buckets != DEFAULT_BUCKETS:
            traffic_u = (int(traffic_u * exp.buckets) + 0.5) / exp.buckets
        entered = exp.traffic_pct / 100
        if traffic_u >= entered or traffic_u < entered * exp.holdout_pct / 100:
            return _default(exp, alloc, eligible)
    draw = _draw_of(exp, alloc, eligible)
    if not draw.choices:
        return _default(exp, alloc, eligible)
    if len(draw.choices) == 1:
        return draw.choices[0]
    if exp.mode == "fixed" and unit is not None:
        kept = _kept_arm(guest, exp)
        if kept is not None and kept in draw.candidates:
            return draw.choices[draw.candidates.index(kept)]
        u = (bucket(exp.seed, "arm", unit, exp.buckets) + 0.5) / exp.buckets  # a bucket's middle: 120 split evenly
    elif unit is not None:
        # Bandits re-draw each epoch: sticky within an epoch, independent across epochs.
        u = unit_interval(exp.seed, "arm", f"{unit}|{alloc.epoch}")
    else:
        u = float(rng.random())
    return draw.choices[draw.pick(u)]


class Draw(NamedTuple):
    """The arms one allocation leaves to one eligibility set, with each arm's :class:`Choice` made in advance:
    assigning a guest is then a hash and a bisection. Re-deriving them per request cost the realistic model
    962 k -> 946 k instructions a decision (benchmarks/instructions, median of 2 rounds; ``Lab.choose`` alone
    32 k -> 21 k under cachegrind)."""

    experiment: Experiment
    candidates: tuple[int, ...]
    """Indices of the eligible arms with weight."""
    cumulative: tuple[float, ...]
    """Their cumulative weights, summed in :func:`pick`'s order, so a bisection lands where its walk does."""
    total: float
    choices: tuple[Choice, ...]
    """Each candidate's SPLIT choice, its propensity its share of the candidates' weight; or the one candidate's
    TARGETING_MATCH choice."""

    def pick(self, u: float) -> int:
        """:func:`pick` over the candidates' weights: the first whose cumulative weight exceeds ``u * total``."""
        return min(bisect_right(self.cumulative, u * self.total), len(self.cumulative) - 1)


MAX_DRAWS = 64
"""Eligibility sets kept per allocation: a model computes them per request, so they are not bounded by it."""


def _draw_of(exp: Experiment, alloc: Allocation, eligible: Collection[str] | None) -> Draw:
    if eligible is not None and not isinstance(eligible, frozenset):
        return make_draw(exp, alloc, eligible)  # not hashable: a caller's set or list
    draw = alloc.draws.get(eligible)
    if draw is None or draw.experiment is not exp:
        if len(alloc.draws) >= MAX_DRAWS:
            alloc.draws.clear()
        draw = alloc.draws[eligible] = make_draw(exp, alloc, eligible)
    return draw


def make_draw(exp: Experiment, alloc: Allocation, eligible: Collection[str] | None) -> Draw:
    """The :class:`Draw` of ``eligible`` under ``alloc``, uncached."""
    candidates = tuple(
        i for i, a in enumerate(exp.arms) if (eligible is None or a.id in eligible) and alloc.weights[i] > 0
    )
    weights = [alloc.weights[i] for i in candidates]
    total = sum(weights)
    cumulative = tuple(accumulate(weights, initial=0.0))[1:]
    choices: tuple[Choice, ...]
    if len(candidates) == 1:
        choices = (_choice(exp, alloc, candidates[0], 1.0, TARGETING_MATCH),)
    else:
        choices = tuple(_choice(exp, alloc, i, w / total, SPLIT) for i, w in zip(candidates, weights, strict=True))
    return Draw(exp, candidates, cumulative, float(total), choices)


def _default(exp: Experiment, alloc: Allocation, eligible: Collection[str] | None) -> Choice:
    """Not in the experiment: the winner of a stopped one, else the control (none if not eligible)."""
    fallback = exp.winner if exp.status == "stopped" and exp.winner else exp.control
    if eligible is not None and fallback not in eligible:
        return Choice(exp.key, None, None, 1.0, DEFAULT, alloc.epoch)
    payload = exp.arms[exp.index[fallback]].payload if fallback is not None else None
    return Choice(exp.key, fallback, payload, 1.0, DEFAULT, alloc.epoch)


def _kept_arm(guest: Mapping[str, Any], exp: Experiment) -> int | None:
    """The arm the guest document already holds (first exposure, or the survivor's after a merge)."""
    assignments = guest.get("assignments")
    entry = assignments.get(exp.key) if isinstance(assignments, Mapping) else None
    arm = entry.get("arm") if isinstance(entry, Mapping) else None
    return exp.index.get(arm) if isinstance(arm, str) else None


def _choice(exp: Experiment, alloc: Allocation, i: int, propensity: float, reason: str) -> Choice:
    arm = exp.arms[i]
    return Choice(exp.key, arm.id, arm.payload, propensity, reason, alloc.epoch)
