"""DMN 1.1–1.5 XML → Arbiter's native model dict (decision tables and literal expressions).

Any DMN namespace is accepted, so files from Camunda, Drools, Trisotech and Sitecore exports import alike.
Every FEEL cell is compiled here once, so a syntax error is reported against the DMN element it sits in
(``/decision[Approval Status]/rule[3]/inputEntry[1]``) rather than against the converted document.
Decision logic other than a decision table or a literal expression (boxed contexts, invocations,
relations…) is refused with a located problem: Arbiter does not half-evaluate a model.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from engine.errors import FeelError, Problem, ValidationError
from engine.feel import compile_expression
from engine.nodes.base import CompileContext
from engine.types import JSONObject

_DMN_NAMESPACE = re.compile(r"omg\.org/spec/DMN/\d{8}/")
_FEEL_LANGUAGES = re.compile(r"(omg\.org/spec/(DMN|FEEL)/\d{8}/FEEL/?|^feel$|^FEEL$)")
_NOT_A_KEY = re.compile(r"[^A-Za-z0-9_.\-]+")
_SKIPPED = frozenset(
    {
        "variable",
        "informationRequirement",
        "knowledgeRequirement",
        "authorityRequirement",
        "description",
        "extensionElements",
        "question",
        "allowedAnswers",
        "supportedObjective",
        "impactedPerformanceIndicator",
        "decisionMaker",
        "decisionOwner",
        "usingProcess",
        "usingTask",
    }
)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> Iterator[ET.Element]:
    return (c for c in el if _local(c.tag) == name)


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next(_children(el, name), None)


def _text(el: ET.Element | None) -> str | None:
    """The FEEL text of an element that holds a ``<text>`` child."""
    if el is None:
        return None
    t = _child(el, "text")
    return None if t is None else (t.text or "").strip()


def _type_ref(raw: str | None) -> str | None:
    """DMN 1.1 wrote QNames (``feel:string``); later versions plain names."""
    if not raw:
        return None
    raw = raw.strip()
    m = re.fullmatch(r"[A-Za-z_][\w.\-]*:([^:]+)", raw)
    return m[1] if m else raw


class _Importer:
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.problems: list[Problem] = []
        # Validates FEEL text now, so problems name the decision and rule; the model compiler compiles it again.
        self.feel = CompileContext(names, {}, self.problems)

    def language(self, el: ET.Element, pointer: str) -> bool:
        lang = el.get("expressionLanguage")
        if lang and not _FEEL_LANGUAGES.search(lang):
            self.problems.append(Problem(pointer, f"expression language '{lang}' is not supported; only FEEL is"))
            return False
        return True

    def expression(self, el: ET.Element | None, pointer: str, *, default: str | None = None) -> str | None:
        text = _text(el)
        if not text:
            if default is None:
                self.problems.append(Problem(pointer, "missing FEEL text"))
            return default
        if el is not None and not self.language(el, pointer):
            return None
        self.feel.expression(text, pointer)
        return text

    def unary_tests(self, el: ET.Element | None, pointer: str) -> str | None:
        text = _text(el) or "-"  # Camunda writes an empty entry for "any value"
        if el is not None and not self.language(el, pointer):
            return None
        self.feel.unary_tests(text, pointer)
        return text

    def decision(self, el: ET.Element) -> JSONObject | None:
        name = el.get("name", "")
        pointer = f"/decision[{name}]"
        variable = _child(el, "variable")
        type_ref = _type_ref(variable.get("typeRef") if variable is not None else None)
        logic = [c for c in el if _local(c.tag) not in _SKIPPED]
        if not logic:
            self.problems.append(Problem(pointer, "has no decision logic"))
            return None
        kind = _local(logic[0].tag)
        node: JSONObject = {"id": name}
        description = _child(el, "description")
        if description is not None and description.text:
            node["description"] = description.text.strip()
        if kind == "literalExpression":
            node.update(kind="expression", expr=self.expression(logic[0], f"{pointer}/literalExpression"))
        elif kind == "decisionTable":
            node.update(self.table(logic[0], pointer, name))
        else:
            self.problems.append(
                Problem(
                    pointer,
                    f"decision logic '{kind}' is not supported; Arbiter imports "
                    "decision tables and literal expressions",
                )
            )
            return None
        if type_ref:
            node["type"] = type_ref
        return node

    def table(self, el: ET.Element, pointer: str, decision: str) -> JSONObject:
        out: JSONObject = {"kind": "table", "hit_policy": el.get("hitPolicy", "UNIQUE")}
        if el.get("aggregation"):
            out["aggregation"] = el.get("aggregation")
        inputs = []
        for i, col in enumerate(_children(el, "input"), 1):
            p = f"{pointer}/input[{i}]"
            expr_el = _child(col, "inputExpression")
            entry: JSONObject = {"expr": self.expression(expr_el, f"{p}/inputExpression")}
            entry["label"] = col.get("label") or entry["expr"]
            if expr_el is not None and _type_ref(expr_el.get("typeRef")):
                entry["type"] = _type_ref(expr_el.get("typeRef"))
            values = _child(col, "inputValues")
            if _text(values):
                entry["values"] = self.unary_tests(values, f"{p}/inputValues")
            inputs.append(entry)
        outputs = []
        columns = list(_children(el, "output"))
        for i, col in enumerate(columns, 1):
            p = f"{pointer}/output[{i}]"
            entry = {"name": col.get("name") or (decision if len(columns) == 1 else None)}
            if entry["name"] is None:
                self.problems.append(Problem(p, "an output of a multi-output table needs a name"))
            if _type_ref(col.get("typeRef")):
                entry["type"] = _type_ref(col.get("typeRef"))
            values = _child(col, "outputValues")
            if _text(values):
                entry["values"] = self.unary_tests(values, f"{p}/outputValues")
            default = _child(col, "defaultOutputEntry")
            if _text(default):
                entry["default"] = self.expression(default, f"{p}/defaultOutputEntry")
            outputs.append(entry)
        out.update(inputs=inputs, outputs=outputs, rules=self.rules(el, pointer, len(inputs), len(outputs)))
        return out

    def rules(self, el: ET.Element, pointer: str, n_inputs: int, n_outputs: int) -> list[JSONObject]:
        rules = []
        for r, rule in enumerate(_children(el, "rule"), 1):
            p = f"{pointer}/rule[{r}]"
            when_els, then_els = list(_children(rule, "inputEntry")), list(_children(rule, "outputEntry"))
            if len(when_els) != n_inputs or len(then_els) != n_outputs:
                self.problems.append(
                    Problem(
                        p,
                        f"has {len(when_els)} input and {len(then_els)} output entries; "
                        f"the table has {n_inputs} inputs and {n_outputs} outputs",
                    )
                )
            out: JSONObject = {
                "id": rule.get("id") or str(r),
                "when": [self.unary_tests(e, f"{p}/inputEntry[{i}]") for i, e in enumerate(when_els, 1)],
                "then": [
                    self.expression(e, f"{p}/outputEntry[{i}]", default="null") for i, e in enumerate(then_els, 1)
                ],
            }
            description = _child(rule, "description")
            if description is not None and description.text and description.text.strip():
                out["description"] = description.text.strip()
            rules.append(out)
        return rules


def _item_definition(el: ET.Element) -> JSONObject:
    out: JSONObject = {"list": el.get("isCollection") == "true"}
    base = _child(el, "typeRef")
    if base is not None and base.text:
        out["base"] = _type_ref(base.text)
    allowed = _text(_child(el, "allowedValues"))
    if allowed:
        out["values"] = allowed
    components = list(_children(el, "itemComponent"))
    if components:
        out["components"] = {c.get("name", ""): _component(c) for c in components}
    return out


def _component(el: ET.Element) -> str | JSONObject:
    """A component's type name, or its own definition when it is a structure, list or constrained."""
    spec = _item_definition(el)
    if set(spec) <= {"base", "list"} and not spec["list"] and "base" in spec:
        return str(spec["base"])
    return spec


def _undeclared_inputs(nodes: list[JSONObject], known: set[str]) -> list[JSONObject]:
    """Names the decisions read that no inputData declares, as model inputs.

    Camunda models usually declare no inputData: tables read process variables by name. Declaring them
    here lets the engine bring them into scope from the request (typed by the input expression's typeRef
    when the expression is just that name).
    """
    found: dict[str, str] = {}
    for node in nodes:
        cells = [(c.get("expr"), c.get("type")) for c in node.get("inputs", [])] + [(node.get("expr"), None)]
        for text, type_ref in cells:
            if not text:
                continue
            try:
                refs = compile_expression(text, names=known).references
            except FeelError:
                continue
            for ref in sorted(refs - known - {"guest", "context"}):
                found.setdefault(ref, type_ref if (type_ref and text.strip() == ref) else "Any")
    return [{"name": name, "type": t} for name, t in found.items()]


def dmn_to_model(xml: bytes, *, key: str | None = None) -> JSONObject:
    """Convert a DMN document to a native model dict; raise :class:`ValidationError` listing every problem."""
    if b"<!ENTITY" in xml:
        raise ValidationError([Problem("", "DMN documents may not declare XML entities")])
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValidationError([Problem("", f"malformed XML: {exc}")]) from exc
    if _local(root.tag) != "definitions" or not _DMN_NAMESPACE.search(root.tag):
        raise ValidationError([Problem("", "not a DMN document: the root must be a DMN <definitions> element")])
    inputs = [
        {
            "name": el.get("name", ""),
            "type": _type_ref(getattr(_child(el, "variable"), "attrib", {}).get("typeRef")) or "Any",
        }
        for el in _children(root, "inputData")
    ]
    decisions = list(_children(root, "decision"))
    importer = _Importer(frozenset(i["name"] for i in inputs) | frozenset(d.get("name", "") for d in decisions))
    seen: set[str] = set()
    declared = [*(("inputData", i["name"]) for i in inputs), *(("decision", d.get("name", "")) for d in decisions)]
    for kind, name in declared:
        if not name:
            importer.problems.append(Problem(f"/{kind}", f"a {kind} needs a name"))
        elif name in seen:
            importer.problems.append(Problem(f"/{kind}[{name}]", f"the name '{name}' is used twice"))
        seen.add(name)
    nodes = [n for n in (importer.decision(d) for d in decisions) if n is not None]
    inputs += _undeclared_inputs(nodes, {name for _, name in declared})
    if not decisions:
        importer.problems.append(Problem("", "the DMN document has no decisions"))
    if importer.problems:
        raise ValidationError(importer.problems)
    name = root.get("name") or root.get("id") or "dmn"
    return {
        "key": key or _NOT_A_KEY.sub("-", name).strip("-.") or "dmn",
        "name": name,
        "format": "dmn",
        "inputs": inputs,
        "types": {el.get("name", ""): _item_definition(el) for el in _children(root, "itemDefinition")},
        "nodes": nodes,
    }
