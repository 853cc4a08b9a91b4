"""DMN TCK conformance runner: ``python -m engine.tck [--tier A --tier B ...] [--dir PATH]``.

Reads the tiered subset listed in ``SUBSETS.csv`` of a DMN TCK checkout (``../shared/dmn-tck`` next to the
repository, or ``$ARBITER_TCK_DIR``), imports each folder's model with :mod:`engine.dmn`, evaluates every
listed test case and compares the results the way the TCK does (numbers numerically, at the precision the
expected value is written with). Tier D (``e1 in e2`` / ``e1 between a and b`` literal expressions) is run
as the unary test a decision table would use: a one-rule table with input ``e1`` and input entry ``e2``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.dmn import dmn_to_model
from engine.errors import ArbiterError, FeelError, Problem, ValidationError
from engine.feel import compile_unary_tests, ops
from engine.feel.convert import coerce_input
from engine.feel.lexer import END, NAME, OP, tokenize
from engine.feel.values import number, parse_date, parse_datetime, parse_duration, parse_time
from engine.model import compile_model
from engine.types import JSONObject


def evaluate_model(model: JSONObject, inputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Compile ``model`` with the engine and evaluate it; return outputs by node id and the node errors.

    Inputs are coerced by their declared DMN types first (item definitions included), which the engine's
    plan does not do itself yet: it coerces built-in type names only.
    """
    plan = compile_model(model)
    types = model.get("types", {})
    context = {i["name"]: coerce_input(inputs.get(i["name"]), i.get("type"), types) for i in model.get("inputs", [])}
    result = plan.evaluate({}, context)
    # The trace keeps FEEL values (Decimal, date…); ``result.outputs`` is already JSON.
    outputs = {entry.id: entry.output for entry in result.trace}
    return outputs, [f"{e['node']}: {e['error']}" for e in result.errors]


_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_NUMERIC = frozenset({"decimal", "double", "float", "int", "integer", "long", "short"})
_PARSERS = {"date": parse_date, "time": parse_time, "dateTime": parse_datetime, "duration": parse_duration}


@dataclass(frozen=True, slots=True)
class CaseResult:
    tier: str
    folder: str
    case_id: str
    passed: bool
    reason: str = ""


@dataclass(slots=True)
class Report:
    results: list[CaseResult] = field(default_factory=list)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Tier → (passed, failed)."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.results:
            ok, bad = out.get(r.tier, (0, 0))
            out[r.tier] = (ok + r.passed, bad + (not r.passed))
        return out

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


def default_tck_dir() -> Path:
    env = os.environ.get("ARBITER_TCK_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "dmn-tck"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _value(el: ET.Element) -> Any:
    """A TCK ``inputNode``/``expected``/``component``/``item`` as a FEEL value, typed by ``xsi:type``."""
    for child in el:
        tag = _local(child.tag)
        if tag == "value":
            if child.get(f"{_XSI}nil") == "true":
                return None
            text = child.text or ""
            kind = (child.get(f"{_XSI}type") or "").rsplit(":", 1)[-1]
            if kind in _NUMERIC:
                return Decimal(text.strip())
            if kind == "boolean":
                return text.strip() == "true"
            return _PARSERS[kind](text) if kind in _PARSERS else text
        if tag == "list":
            return [_value(item) for item in child if _local(item.tag) == "item"]
    components = [c for c in el if _local(c.tag) == "component"]
    return {c.get("name", ""): _value(c) for c in components} if components else None


def same(actual: Any, expected: Any) -> bool:
    """TCK equality: FEEL equality, with numbers compared numerically to a relative 1e-12."""
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(expected, Decimal):
        a = number(actual)
        if a is None:
            return False
        # The TCK's expected numbers were computed in binary floating point (0008-LX-arithmetic expects
        # 562.707359373292 where decimal128 gives 562.70735937326592…): agree to 12 significant digits.
        return abs(a - expected) <= abs(expected) * Decimal("1e-12")
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same(actual[k], e) for k, e in expected.items())
        )
    return ops.equal(actual, expected) is True


def _split_membership(text: str) -> tuple[str, str] | None:
    """``e1 in e2`` → (e1, e2); ``e1 between a and b`` → (e1, "[a..b]"); at bracket depth 0."""
    depth, split = 0, None
    tokens = tokenize(text)
    for i, t in enumerate(tokens):
        if t.kind == OP and t.text in "([{":
            depth += 1
        elif t.kind == OP and t.text in ")]}":
            depth -= 1
        elif depth == 0 and t.kind == NAME and t.text in ("in", "between") and split is None:
            split = i
    if split is None:
        return None
    head, rest = text[: tokens[split].pos].strip(), text[tokens[split].pos + len(tokens[split].text) :].strip()
    if tokens[split].text == "in":
        try:
            compile_unary_tests(rest)
        except FeelError:
            if rest.startswith("(") and rest.endswith(")"):
                rest = rest[1:-1]  # `x in (a, b)`: the parentheses group a list of tests
        return head, rest
    depth = 0
    for t in tokens[split + 1 :]:
        depth += t.kind == OP and t.text in "([{"
        depth -= t.kind == OP and t.text in ")]}"
        if depth == 0 and t.kind == NAME and t.text == "and":
            low = text[tokens[split].pos + len("between") : t.pos].strip()
            return head, f"[{low}..{text[t.pos + 3 :].strip()}]"
        if t.kind == END:
            break
    return None


def _unary_model(name: str, text: str) -> JSONObject:
    split = _split_membership(text)
    if split is None:
        raise ValidationError([Problem(f"/decision[{name}]", f"not an 'in' or 'between' expression: {text!r}")])
    lhs, test = split
    # The test and its negation: FEEL's `in` is three-valued, and a null test matches neither rule (null).
    rules = [
        {"id": "in", "when": [test], "then": ["true"]},
        {"id": "not in", "when": [f"not({test})"], "then": ["false"]},
    ]
    node = {
        "id": name,
        "kind": "table",
        "hit_policy": "U",
        "inputs": [{"expr": lhs}],
        "outputs": [{"name": name}],
        "rules": rules,
    }
    return {"key": name, "inputs": [], "types": {}, "nodes": [node]}


@dataclass(slots=True)
class _Folder:
    """One TCK folder, parsed once: its model (or why it failed to import) and its test cases."""

    model: JSONObject | None
    import_error: str
    literals: dict[str, str]
    cases: dict[str, ET.Element]


def _load(folder: Path) -> _Folder:
    dmn = next(folder.glob("*.dmn"), None)
    if dmn is None:
        return _Folder(None, f"no .dmn model under {folder}", {}, {})
    raw = dmn.read_bytes()
    literals = {}
    for d in ET.fromstring(raw).iter():
        if _local(d.tag) == "decision":
            text = next((t.text for t in d.iter() if _local(t.tag) == "text"), None)
            literals[d.get("name", "")] = (text or "").strip()
    try:
        model, error = dmn_to_model(raw), ""
    except ValidationError as exc:
        model, error = None, "; ".join(f"{p.pointer}: {p.message}" for p in exc.problems[:3])
    cases = {}
    for test_file in sorted(folder.glob("*-test-01.xml")):
        for case in ET.parse(test_file).getroot():
            if _local(case.tag) == "testCase":
                cases[case.get("id", "")] = case
    return _Folder(model, error, literals, cases)


def _run_case(tier: str, data: _Folder, case: ET.Element) -> str:
    """Evaluate one test case; return the reason it fails, or "" when it passes."""
    inputs = {n.get("name", ""): _value(n) for n in case if _local(n.tag) == "inputNode"}
    reasons = []
    for result in (n for n in case if _local(n.tag) == "resultNode"):
        name = result.get("name", "")
        expected_el = next((c for c in result if _local(c.tag) == "expected"), None)
        expected = _value(expected_el) if expected_el is not None else None
        if tier.startswith("D"):
            model = _unary_model(name, data.literals.get(name, ""))
        elif data.model is None:
            return f"import failed: {data.import_error}"
        else:
            model = data.model
        outputs, errors = evaluate_model(model, inputs)
        if not same(outputs.get(name), expected):
            detail = f" ({'; '.join(errors)})" if errors else ""
            reasons.append(f"{name}: got {outputs.get(name)!r}, expected {expected!r}{detail}")
    return "; ".join(reasons)


def _aliases(tiers: Sequence[str]) -> dict[str, str]:
    """Tier → short name: its first ``_``-separated word when that is unambiguous (A, A3, B, C, D)."""
    out: dict[str, str] = {}
    for tier in sorted(set(tiers)):
        short = tier.split("_")[0]
        out[tier] = short if short not in out.values() else tier
    return out


def run_tck(tck_dir: Path, tiers: set[str] | None = None) -> Report:
    """Run the listed cases of ``tiers`` (short names like ``A``, ``D`` or full tier names; None: all)."""
    with (tck_dir / "SUBSETS.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    aliases = _aliases([r["tier"] for r in rows])
    report, folders = Report(), {}
    for row in rows:
        tier = row["tier"]
        if tiers is not None and tier not in tiers and aliases[tier] not in tiers:
            continue
        folder, case_id = row["folder"], row["testCase_id"]
        if folder not in folders:
            folders[folder] = _load(tck_dir / folder)
        case = folders[folder].cases.get(case_id)
        try:
            missing = folders[folder].import_error if not folders[folder].cases else "no such test case"
            reason = missing if case is None else _run_case(tier, folders[folder], case)
        except (ArbiterError, ValueError, KeyError) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"
        report.results.append(CaseResult(aliases[tier], Path(folder).name, case_id, not reason, reason))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.tck", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="TCK subset directory (default: ../shared/dmn-tck)")
    parser.add_argument("--tier", action="append", help="tier to run (A, A3, B, C, D, D_not_sfeel…); repeatable")
    parser.add_argument("--failures-only", action="store_true", help="print only the failing cases")
    args = parser.parse_args(argv)
    tck_dir = args.dir or default_tck_dir()
    if not (tck_dir / "SUBSETS.csv").is_file():
        print(f"tck: no SUBSETS.csv under {tck_dir} (set ARBITER_TCK_DIR or pass --dir)", file=sys.stderr)
        return 2
    report = run_tck(tck_dir, set(args.tier) if args.tier else None)
    for r in report.results:
        if r.passed and args.failures_only:
            continue
        print(f"{r.tier:<12} {r.folder:<40} {r.case_id:<40} {'PASS' if r.passed else 'FAIL'}  {r.reason}")
    for tier, (ok, bad) in report.counts().items():
        print(f"tck {tier}: {ok} passed, {bad} failed")
    print(f"tck: {len(report.results) - len(report.failed)} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
