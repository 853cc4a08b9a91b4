"""Micro-benchmarks of compile and evaluate (pytest-benchmark). Run: make bench."""

from __future__ import annotations

from typing import Any

from benchmarks.data import big_table_model, example_model, guests
from engine.model import compile_model
from engine.store import empty_guest

CONTEXT = {"channel": "WEB", "now": "2026-06-01"}


def test_compile_next_best_offer(benchmark: Any) -> None:
    defn = example_model()
    plan = benchmark(compile_model, defn)
    assert plan.output_id == "answer"


def test_evaluate_next_best_offer(benchmark: Any) -> None:
    plan = compile_model(example_model())
    population = [{**empty_guest(g["ref"]), **g} for g in guests(1000)]
    i = 0

    def one() -> Any:
        nonlocal i
        i = (i + 1) % len(population)
        return plan.evaluate(population[i], CONTEXT)

    result = benchmark(one)
    assert result.errors == []


def test_compile_200_rule_table(benchmark: Any) -> None:
    defn = big_table_model(200)
    plan = benchmark(compile_model, defn)
    assert len(plan.nodes) == 1


def test_evaluate_200_rule_table(benchmark: Any) -> None:
    plan = compile_model(big_table_model(200))
    guest = {**empty_guest("g"), "attributes": {"tier": "silver"}}
    contexts = [{"category": f"cat{i % 40}", "price": (i * 37) % 1000} for i in range(100)]
    i = 0

    def one() -> Any:
        nonlocal i
        i = (i + 1) % len(contexts)
        return plan.evaluate(guest, contexts[i])

    result = benchmark(one)
    assert result.errors == []
