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

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua54 as lupa

from engine.errors import ScriptError
from engine.feel import to_json

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
        api = self._lua.execute(BOOTSTRAP, self.limits.string_bytes, MAX_DEPTH, MAX_TOKENS)
        self._compile, self._run, self._slice = api["compile"], api["run"], api["slice"]
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

    def call(self, script: Script, args: Sequence[Any]) -> Any:
        """Run ``script`` with plain-data ``args``; returns plain Python data (dict, list, str, numbers…)."""
        tokens: list[Any] = []
        for a in args:
            _encode(a, tokens, 0)
        with self._lock:
            # Input tables are built inside the call, after the limit is set: allow for them on top.
            self._allow_memory(len(tokens) * _BYTES_PER_TOKEN)
            try:
                if len(tokens) <= MAX_TOKENS:
                    reply = self._run(script.chunk, self.limits.instructions, len(args), *tokens)
                else:
                    reply = self._run(script.chunk, self.limits.instructions, -len(args), self._table_from(tokens))
            except lupa.LuaMemoryError:
                reply = (False, "not enough memory")
            except UnicodeDecodeError as exc:
                raise ScriptError(f"{script.name}: returned a string that is not valid UTF-8") from exc
            except lupa.LuaError as exc:  # raised outside the protected call: conversion of the results
                reply = (False, str(exc))
            if not reply[0]:
                message = str(reply[1])
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
            count = reply[1]
            if count == 0:
                return None
            if count < 0:  # a large result came back as a table of tokens
                table, reply = reply[2], [True, count]
                for first in range(1, -count + 1, MAX_TOKENS):
                    reply += self._slice(table, first, min(first + MAX_TOKENS - 1, -count))[1:]
        # reply: true, count, tokens...
        return _decode(reply, 2)[0]

    def _allow_memory(self, extra_bytes: int = 0) -> None:
        # lupa's limit is absolute; counting from what the runtime holds now means compiled scripts and
        # not yet collected garbage of earlier calls do not eat into this call's allowance.
        self._lua.set_max_memory(self._lua.get_memory_used() + self.limits.memory_bytes + extra_bytes)


# Values cross into and out of Lua as one flat sequence of plain values: see "tokens" in sandbox.lua.
_SCALAR, _MAP, _LIST, _FLAT_MAP, _FLAT_LIST = 0, 1, 2, 3, 4
MAX_TOKENS = 4096
"""Values of up to this many tokens cross as call arguments or results (one conversion in C); larger inputs go as
one table, larger results come back as one and are read in slices of this many."""
_BYTES_PER_TOKEN = 64
"""Roughly what a token costs once decoded into a Lua table."""


def _encode(value: Any, out: list[Any], depth: int) -> None:
    """Append ``value``'s tokens to ``out``: FEEL and JSON values become what a script sees (Decimal → number,
    dates → ISO strings, any other map key → its string)."""
    kind = type(value)
    if kind in _PLAIN:
        out += (_SCALAR, value)
        return
    if depth > MAX_DEPTH:
        raise ScriptError(f"input nested deeper than {MAX_DEPTH} levels")
    # Concrete types before ABCs, plain loops rather than all(<generator>), plain members inline rather than a
    # call each: this runs for every script input of every decision, and most members (``guest.facts``) are plain.
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
        _encode_map(value, out, depth, kind is dict)
    elif kind is list or kind is tuple or isinstance(value, list | tuple):
        _encode_list(value, out, depth)
    else:
        out += (_SCALAR, _scalar(value))


def _encode_map(value: Mapping[Any, Any], out: list[Any], depth: int, is_dict: bool) -> None:
    if is_dict:
        for k, v in value.items():
            if type(k) is not str or type(v) not in _PLAIN:
                break
        else:  # a flat map of plain values: its pairs as they are
            out += (_FLAT_MAP, len(value))
            for item in value.items():
                out += item
            return
    out += (_MAP, len(value))
    for k, v in value.items():
        out.append(k if type(k) is str else str(k))
        if type(v) in _PLAIN:
            out += (_SCALAR, v)
        else:
            _encode(v, out, depth + 1)


def _encode_list(value: list[Any] | tuple[Any, ...], out: list[Any], depth: int) -> None:
    for v in value:
        if type(v) not in _PLAIN:
            break
    else:
        out += (_FLAT_LIST, len(value))
        out += value
        return
    out += (_LIST, len(value))
    for v in value:
        if type(v) in _PLAIN:
            out += (_SCALAR, v)
        else:
            _encode(v, out, depth + 1)


def _scalar(value: Any) -> Any:
    """A FEEL value as JSON has it, exactly as the decision's own answer writes it (``to_json``): a
    script sees a date as the storefront would."""
    if isinstance(value, str | bool | int | float):  # subclasses of the plain kinds
        return value
    return to_json(value)


def _decode(tokens: Sequence[Any], i: int) -> tuple[Any, int]:
    """The value whose tokens start at ``tokens[i]`` (checked to be JSON by the Lua side), and where the next
    one starts."""
    tag, n = tokens[i], tokens[i + 1]
    i += 2
    if tag == _SCALAR:
        return n, i
    if tag == _FLAT_MAP:
        end = i + 2 * n
        return dict(zip(tokens[i:end:2], tokens[i + 1 : end : 2], strict=True)), end
    if tag == _FLAT_LIST:
        return list(tokens[i : i + n]), i + n
    if tag == _MAP:
        out: dict[str, Any] = {}
        for _ in range(n):
            key = tokens[i]
            out[key], i = _decode(tokens, i + 1)
        return out, i
    items = []
    for _ in range(n):
        item, i = _decode(tokens, i)
        items.append(item)
    return items, i


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
