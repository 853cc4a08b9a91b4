"""The Lua sandbox that script nodes run in: one runtime per worker, a fresh environment per call.

Lua 5.4 (``lupa.lua54``) rather than LuaJIT: lupa can only cap memory through its own allocator, and
LuaJIT on 64-bit platforms refuses custom allocators, so ``max_memory`` would be silently unenforced.
Scripts are small glue; interpreter speed matters less than a memory cap that holds.

What a script can reach is built in ``sandbox.lua``: a frozen, read-only standard library (safe string,
table, math, utf8 and date helpers) and nothing else — no io, os, require, load, debug, coroutines or
Python. Values cross the boundary as plain data only: Python values are copied into fresh Lua tables
and results are copied back out, so no Python object is ever reachable from Lua.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import lupa.lua54 as lupa

from engine.errors import ScriptError

BOOTSTRAP = (Path(__file__).with_name("sandbox.lua")).read_text()
MAX_DEPTH = 32
_UNSAFE_GLOBALS = (
    "python",
    "io",
    "os",
    "debug",
    "package",
    "require",
    "load",
    "loadfile",
    "dofile",
    "collectgarbage",
    "print",
    "warn",
    "coroutine",
)


@dataclass(frozen=True, slots=True)
class Limits:
    instructions: int = 1_000_000
    """Lua VM instructions per call (about 5–10 ms of pure Lua on a current core)."""
    memory_bytes: int = 16 * 1024 * 1024
    """Memory a call may allocate beyond what the runtime holds already."""
    string_bytes: int = 1024 * 1024
    """Largest string ``string.rep`` may build."""


def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    # No Python object is ever handed to Lua; if one slipped through, it still exposes nothing.
    raise AttributeError("access to Python objects is not allowed from scripts")


_PLAIN = frozenset({str, bool, int, float, type(None)})
"""Values Lua takes as they are."""


class Sandbox:
    """A Lua runtime locked down for untrusted scripts. Create one per worker and share it."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._lua = lupa.LuaRuntime(
            max_memory=0,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_deny_attributes,
        )
        api = self._lua.execute(BOOTSTRAP, self.limits.string_bytes)
        self._compile, self._run, self._is_array = api["compile"], api["run"], api["is_array"]
        self._budget_message: str = api["budget_exhausted"]
        real_globals = self._lua.globals()
        for name in _UNSAFE_GLOBALS:
            real_globals[name] = None
        self._table_from = self._lua.table_from
        # lupa serialises calls into one runtime with its own lock; this one also covers the memory limit
        # that is set per call, so two threads never share one allowance.
        self._lock = threading.Lock()

    def compile(self, source: str, name: str) -> Script:
        """Compile ``source`` once (at publish). Raises :class:`ScriptError` with the Lua message and line."""
        if not isinstance(source, str):
            raise ScriptError("a script's source is a string")
        with self._lock:
            self._allow_memory()
            chunk, message = self._compile(source, name)
        if chunk is None:
            raise ScriptError(f"does not compile: {message}", line=_line(message))
        return Script(name, self, chunk)

    def call(self, script: Script, args: tuple[Any, ...]) -> Any:
        """Run ``script`` with plain-data ``args``; returns plain Python data (dict, list, str, numbers…)."""
        with self._lock:
            lua_args = [self._to_lua(a, 0) for a in args]
            self._allow_memory()
            try:
                ok, *rest = self._run(script.chunk, self.limits.instructions, *lua_args)
            except lupa.LuaMemoryError:
                ok, rest = False, ["not enough memory"]
            except UnicodeDecodeError as exc:
                raise ScriptError(f"{script.name}: returned a string that is not valid UTF-8") from exc
            except lupa.LuaError as exc:  # raised outside the protected call: conversion of the results
                ok, rest = False, [str(exc)]
            if not ok:
                message = str(rest[0])
                if "not enough memory" in message:
                    self._lua.gccollect()
                    raise ScriptError(f"{script.name}: memory limit of {self.limits.memory_bytes} bytes exceeded")
                if self._budget_message in message:
                    where = message.rpartition(" at ")[2]
                    raise ScriptError(
                        f"{script.name}: instruction budget of {self.limits.instructions} exhausted at {where}",
                        line=_line(where + ": "),
                    )
                raise ScriptError(message, line=_line(message))
            count, values = rest[0], rest[1:]
            return self._from_lua(values[0], 0) if count else None

    def _allow_memory(self) -> None:
        # lupa's limit is absolute; counting from what the runtime holds now means compiled scripts and
        # not yet collected garbage of earlier calls do not eat into this call's allowance.
        self._lua.set_max_memory(self._lua.get_memory_used() + self.limits.memory_bytes)

    def _to_lua(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, str | bool | int | float):
            return value
        if depth > MAX_DEPTH:
            raise ScriptError(f"input nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if type(value) is dict and all(type(k) is str and type(v) in _PLAIN for k, v in value.items()):
            # A flat map of plain values (``guest.facts``): one copy in C instead of a call per value.
            return self._table_from(value)
        if isinstance(value, Mapping):
            return self._table_from({str(k): self._to_lua(v, depth + 1) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return self._table_from([self._to_lua(v, depth + 1) for v in value])
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        return str(value)

    def _from_lua(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, str | bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ScriptError(f"returned a non-finite number ({value}); results must be JSON")
            return value
        if isinstance(value, bytes):  # a Lua string that is not UTF-8
            raise ScriptError("returned a string that is not valid UTF-8")
        if depth > MAX_DEPTH:
            raise ScriptError(f"returned a value nested deeper than {MAX_DEPTH} levels (a cycle?)")
        if lupa.lua_type(value) == "table":
            return self._table_to_python(value, depth)
        raise ScriptError(f"returned a {lupa.lua_type(value)}; results must be plain data")

    def _table_to_python(self, table: Any, depth: int) -> Any:
        items = list(table.items())
        if self._is_array(table) or (items and all(isinstance(k, int) and not isinstance(k, bool) for k, _ in items)):
            keys = sorted(k for k, _ in items)
            if keys and keys != list(range(1, len(keys) + 1)):
                raise ScriptError("returned a list with holes (keys must be 1..n)")
            return [self._from_lua(v, depth + 1) for _, v in sorted(items, key=lambda kv: kv[0])]
        out: dict[str, Any] = {}
        for k, v in items:
            if not isinstance(k, str):
                raise ScriptError(f"returned a map with a non-string key ({k!r})")
            out[k] = self._from_lua(v, depth + 1)
        return out


@dataclass(frozen=True, slots=True)
class Script:
    """A compiled script. Calling it runs it in its sandbox with a fresh environment."""

    name: str
    sandbox: Sandbox
    chunk: Any

    def __call__(self, *args: Any) -> Any:
        return self.sandbox.call(self, args)


def _line(message: str) -> int | None:
    """``name:12: message`` → 12 (the first location in a Lua error message)."""
    head, sep, _ = message.partition(": ")
    if sep:
        _, _, line = head.rpartition(":")
        if line.isdigit():
            return int(line)
    return None


SERVICE = "lua"
"""Key of the worker's shared :class:`Sandbox` in ``rt.services``."""


def sandbox_for(services: Any) -> Sandbox:
    """The worker's sandbox; without app services (the CLI, tests) a private one is made on demand."""
    if isinstance(services, dict):
        sandbox = services.get(SERVICE)
        if sandbox is None:
            sandbox = services[SERVICE] = Sandbox()
        return sandbox
    return Sandbox()
