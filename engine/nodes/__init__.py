"""Node kinds: one module each, registered here by their ``KIND``."""

from __future__ import annotations

from types import ModuleType

from engine.nodes import experiment, expression, external, offers, output, rule, script, table
from engine.nodes.base import NodeCompiler

_MODULES: tuple[ModuleType, ...] = (table, expression, rule, offers, experiment, output, script, external)

COMPILERS: dict[str, NodeCompiler] = {m.KIND: m.compile for m in _MODULES}
