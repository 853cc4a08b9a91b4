"""Decision models: parse a document (JSON, YAML or DMN XML), validate it, compile it into a plan.

Compilation happens once per version, at upload; the resulting :class:`~engine.plan.Plan` is immutable and
shared by every request. Every problem found is reported with a JSON pointer into the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
import yaml

from engine.errors import BadRequest, Problem, ValidationError
from engine.feel import UnaryTests
from engine.guestreads import reads_assignments, reads_session_events
from engine.nodes import COMPILERS
from engine.nodes.base import CompileContext, Node
from engine.plan import Plan
from engine.types import JSONObject

RESERVED = frozenset({"guest", "context"})
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
TOP_LEVEL = frozenset(
    {
        "key",
        "name",
        "description",
        "format",
        "inputs",
        "types",
        "offers",
        "nodes",
        "tests",
        "deadline_ms",
        "experiments",
    }
)


def parse_document(body: bytes, content_type: str | None = None) -> JSONObject:
    """Bytes of an uploaded model → its definition dict. DMN XML is converted by :mod:`engine.dmn`."""
    ct = (content_type or "").split(";")[0].strip().lower()
    head = body.lstrip()[:1]
    if ct.endswith("xml") or head == b"<":
        from engine.dmn import dmn_to_model

        dmn: JSONObject = dmn_to_model(body)
        return dmn
    if ct.endswith("yaml") or ct.endswith("yml") or (head not in (b"{", b"[") and ct != "application/json"):
        try:
            doc = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise BadRequest(f"malformed YAML{where}: {getattr(exc, 'problem', exc)}", pointer="") from exc
    else:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON: {exc}", pointer="") from exc
    if not isinstance(doc, dict):
        raise ValidationError([Problem("", "a model is a JSON/YAML object")])
    return doc


def check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise BadRequest(f"invalid model key '{key}': letters, digits, '-', '_', '.', at most 128", pointer="/key")


def compile_model(
    defn: JSONObject, *, key: str | None = None, version: int = 0, services: Any = None, max_result_bytes: int = 65_536
) -> Plan:
    """Validate and compile ``defn``; raise :class:`ValidationError` listing every located problem."""
    problems: list[Problem] = []
    for k in defn:
        if k not in TOP_LEVEL:
            problems.append(Problem(f"/{k}", f"unknown top-level field '{k}'"))
    nodes_raw = defn.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ValidationError([*problems, Problem("/nodes", "a model needs a non-empty 'nodes' list")])
    inputs = _inputs(defn.get("inputs", []), problems)
    ids = _node_ids(nodes_raw, problems)
    names = frozenset(ids) | frozenset(name for name, _ in inputs) | RESERVED
    ctx = CompileContext(names, defn, problems, services)
    compiled: list[tuple[int, Node]] = []
    for i, raw in enumerate(nodes_raw):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            continue
        kind = raw.get("kind")
        compiler = COMPILERS.get(kind) if isinstance(kind, str) else None
        if compiler is None:
            problems.append(
                Problem(f"/nodes/{i}/kind", f"unknown node kind {kind!r}; one of {', '.join(sorted(COMPILERS))}")
            )
            continue
        node = compiler(raw, f"/nodes/{i}", ctx)
        if node is not None:
            for name in sorted(node.deps - names):
                problems.append(
                    Problem(f"/nodes/{i}", f"refers to '{name}', which is no node, input, guest or context")
                )
            compiled.append((i, node))
    outputs = [i for i, n in compiled if n.kind == "output"]
    if len(outputs) > 1:
        problems.append(Problem(f"/nodes/{outputs[1]}", "a model has at most one output node"))
    types = defn.get("types", {})
    if not isinstance(types, dict):
        problems.append(Problem("/types", "must be an object of type name → definition"))
        types = {}
    deadline_ms = defn.get("deadline_ms")
    if deadline_ms is not None and (not isinstance(deadline_ms, int) or not 1 <= deadline_ms <= 10_000):
        problems.append(Problem("/deadline_ms", "must be an integer number of milliseconds, 1 to 10000"))
    input_checks = _input_checks(inputs, types, ctx)
    if problems:
        raise ValidationError(problems)
    order = _topological(compiled, ids)
    return Plan(
        key=key or str(defn.get("key") or defn.get("name") or "model"),
        version=version,
        nodes=order,
        output_id=next((n.id for n in order if n.kind == "output"), None),
        inputs=tuple(inputs),
        deadline_ms=deadline_ms,
        max_result_bytes=max_result_bytes,
        types=types,
        input_checks=input_checks,
        reads_session_events=reads_session_events(defn),
        reads_assignments=reads_assignments(defn),
        experiment_keys=tuple(getattr(n, "experiment", "") for n in order if n.kind == "experiment"),
    )


def _input_checks(
    inputs: list[tuple[str, str]], types: JSONObject, ctx: CompileContext
) -> tuple[tuple[str, UnaryTests], ...]:
    """Allowed-value tests of the declared inputs whose (item definition) type lists them."""
    checks = []
    for name, type_name in inputs:
        spec = types.get(type_name)
        if isinstance(spec, dict) and isinstance(spec.get("values"), str) and not spec.get("list"):
            tests = ctx.unary_tests(spec["values"], f"/types/{type_name}/values")
            if tests is not None:
                checks.append((name, tests))
    return tuple(checks)


def _inputs(raw: Any, problems: list[Problem]) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        problems.append(Problem("/inputs", "must be a list of {name, type}"))
        return []
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(Problem(f"/inputs/{i}/name", "an input needs a string 'name'"))
            continue
        if item["name"] in RESERVED:
            problems.append(Problem(f"/inputs/{i}/name", f"'{item['name']}' is reserved"))
        out.append((item["name"], str(item.get("type", "Any"))))
    return out


def _node_ids(nodes: list[Any], problems: list[Problem]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for i, raw in enumerate(nodes):
        if not isinstance(raw, dict):
            problems.append(Problem(f"/nodes/{i}", "a node is an object"))
            continue
        nid = raw.get("id")
        if not isinstance(nid, str) or not nid.strip():
            problems.append(Problem(f"/nodes/{i}/id", "a node needs a non-empty string 'id'"))
        elif nid in RESERVED:
            problems.append(Problem(f"/nodes/{i}/id", f"'{nid}' is reserved"))
        elif nid in ids:
            problems.append(Problem(f"/nodes/{i}/id", f"duplicate node id '{nid}' (first at /nodes/{ids[nid]})"))
        else:
            ids[nid] = i
    return ids


def _topological(compiled: Iterable[tuple[int, Node]], ids: dict[str, int]) -> tuple[Node, ...]:
    """Order nodes so every node comes after what it reads; I/O nodes as early as their inputs allow.

    Starting external calls first lets them overlap with the in-process work that does not need them.
    """
    by_id = {n.id: n for _, n in compiled}
    waiting = {n.id: {d for d in n.deps if d in by_id} for n in by_id.values()}
    order: list[Node] = []
    while waiting:
        ready = [nid for nid, deps in waiting.items() if not deps]
        if not ready:
            stuck = sorted(waiting, key=lambda nid: ids[nid])
            raise ValidationError(
                [Problem(f"/nodes/{ids[nid]}", f"'{nid}' is part of a cycle: {' → '.join(stuck)}") for nid in stuck]
            )
        ready.sort(key=lambda nid: (not hasattr(by_id[nid], "evaluate_async"), ids[nid]))
        for nid in ready:
            order.append(by_id[nid])
            del waiting[nid]
        for deps in waiting.values():
            deps.difference_update(ready)
    return tuple(order)
