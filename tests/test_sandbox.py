"""The Lua sandbox: escapes fail with a clear error, limits hold, nothing leaks between calls."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType

import pytest

from engine.errors import ScriptError
from engine.sandbox import Limits, Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(Limits(instructions=200_000, memory_bytes=4 * 1024 * 1024, string_bytes=64 * 1024))


def run(sandbox: Sandbox, body: str, *args: object) -> object:
    return sandbox.compile(f"return function(...)\n{body}\nend", "t")(*args)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return io.open('/etc/passwd')", "global 'io'"),
        ("return os.execute('id')", "global 'os'"),
        ("return require('os')", "global 'require'"),
        ("return load('return 1')()", "global 'load'"),
        ("return loadstring('return 1')", "global 'loadstring'"),
        ("return dofile('/etc/passwd')", "global 'dofile'"),
        ("return debug.getinfo(1)", "global 'debug'"),
        ("return package.loaded", "global 'package'"),
        ("return collectgarbage('count')", "global 'collectgarbage'"),
        ("return python.eval('1')", "global 'python'"),
        ("return coroutine.create(print)", "global 'coroutine'"),
        ("return string.dump(function() end)", "field 'dump'"),
        ("return getmetatable('').__index", "attempt to index a nil value"),
        ("return getmetatable(string)", None),
        ("string.upper = nil", "cannot modify the standard library table 'string'"),
        ("math.pi = 3", "cannot modify the standard library table 'math'"),
        ("setmetatable(string, {})", "protected metatable"),
        ("setmetatable({}, {__gc = function() end})", "__gc metamethods are not allowed"),
        ("return _G.os", "global '_G'"),
        ("return rawset(string, 'upper', 1)", "global 'rawset'"),
    ],
)
def test_escape_attempts_fail_clearly(sandbox: Sandbox, body: str, message: str | None) -> None:
    if message is None:
        assert run(sandbox, body) is False  # the frozen library hides its metatable
        return
    with pytest.raises(ScriptError) as exc:
        run(sandbox, body)
    assert message in exc.value.detail


def test_pairs_over_a_library_does_not_hand_out_the_table(sandbox: Sandbox) -> None:
    body = (
        "local f, t = pairs(string); local names = {} "
        "for k in pairs(string) do names[#names+1] = k end return t == nil and #names > 5"
    )
    assert run(sandbox, body) is True


def test_runaway_loop_is_stopped_by_the_instruction_budget(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError) as exc:
        run(sandbox, "local n = 0\nwhile true do n = n + 1 end")
    assert "instruction budget of 200000 exhausted at t:3" in exc.value.detail and exc.value.line == 3


def test_pcall_cannot_swallow_the_budget(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError, match="instruction budget"):
        run(sandbox, "while true do pcall(function() while true do end end) end")


def test_close_handlers_cannot_extend_the_budget(sandbox: Sandbox) -> None:
    body = """
    local function deep(n)
      local guard <close> = setmetatable({}, {__close = function() while true do end end})
      if n > 0 then deep(n - 1) end
      while true do end
    end
    deep(100)"""
    with pytest.raises(ScriptError, match="instruction budget"):
        run(sandbox, body)


def test_table_bomb_is_stopped_by_the_memory_cap() -> None:
    roomy = Sandbox(Limits(instructions=100_000_000, memory_bytes=4 * 1024 * 1024))
    with pytest.raises(ScriptError, match="memory limit of 4194304 bytes exceeded"):
        run(roomy, "local t = {} for i = 1, 1e8 do t[i] = {i} end")
    assert run(roomy, "return 1") == 1


def test_string_concatenation_bomb_is_stopped(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError, match="memory limit|instruction budget"):
        run(sandbox, "local s = 'x' while true do s = s .. s end")


def test_string_rep_is_capped(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError, match="string.rep would build 1000000000 bytes"):
        run(sandbox, "return ('x'):rep(1e9)")
    assert run(sandbox, "return string.rep('ab', 3, '-')") == "ab-ab-ab"


def test_runtime_keeps_serving_after_a_bomb(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError):
        run(sandbox, "local t = {} for i = 1, 1e8 do t[i] = ('x'):rep(1000) .. i end")
    assert run(sandbox, "local t = {} for i = 1, 1000 do t[i] = i end return #t") == 1000


def test_globals_do_not_persist_between_calls(sandbox: Sandbox) -> None:
    script = sandbox.compile("return function() counter = (counter or 0) + 1 return counter end", "c")
    assert [script(), script(), script()] == [1, 1, 1]


def test_chunk_locals_do_not_persist_between_calls(sandbox: Sandbox) -> None:
    script = sandbox.compile("local n = 0 return function() n = n + 1 return n end", "c")
    assert [script(), script()] == [1, 1]


def test_scripts_do_not_see_each_other(sandbox: Sandbox) -> None:
    a = sandbox.compile("return function() shared = 'from a' return shared end", "a")
    b = sandbox.compile("return function() return shared end", "b")
    assert a() == "from a" and b() is None


def test_inputs_are_plain_tables_not_python_objects(sandbox: Sandbox) -> None:
    body = "local g = ... return {type(g), type(g.facts), g.facts.ltv, #g.tags, g.tags[1], type(g.missing)}"
    assert run(sandbox, body, {"facts": {"ltv": 12.5}, "tags": ["a", "b"]}) == ["table", "table", 12.5, 2, "a", "nil"]


def test_results_are_converted_to_json_values(sandbox: Sandbox) -> None:
    assert run(sandbox, "return {a = 1, b = {1, 2}, c = array(), d = {}, e = 'x', f = true, g = 1.5}") == {
        "a": 1, "b": [1, 2], "c": [], "d": {}, "e": "x", "f": True, "g": 1.5,
    }  # fmt: skip


def test_a_result_costly_to_convert_is_stopped_by_the_budget(sandbox: Sandbox) -> None:
    # 31 tables, but 2^30 paths through them: converting it is work the script's budget must cover.
    with pytest.raises(ScriptError, match="instruction budget of 200000 exhausted at the conversion of its result"):
        run(sandbox, "local t = {} for i = 1, 30 do t = {t, t} end return t")


@pytest.mark.parametrize("size", [10, 1_500])
def test_large_and_nested_values_cross_both_ways(size: int) -> None:
    # 1,500 orders are over both the passed and the returned token limits: the table paths are used.
    # Converting the result counts against the budget: this one needs more than the fixture allows.
    sandbox = Sandbox()
    rng = random.Random(size)
    value = {
        "orders": [{"id": f"o{i}", "total": rng.random() * 100, "paid": i % 2 == 0} for i in range(size)],
        "tags": [f"t{i}" for i in range(size)],
        "nested": {"a": {"b": {"c": [1, [2, [3]]]}}},
        "empty_list": [],
        "n": size,
    }
    echoed = run(sandbox, "local v = ... return v", value)
    assert echoed == {**value, "empty_list": {}}  # an empty Lua table reads as a map (array() marks a list)
    body = "local v = ... local s = 0 for _, o in ipairs(v.orders) do s = s + o.total end return {s, #v.tags, v.n}"
    assert run(sandbox, body, value) == [pytest.approx(sum(o["total"] for o in value["orders"])), size, size]


def test_non_plain_inputs_become_what_a_script_can_read(sandbox: Sandbox) -> None:
    value = {1: Decimal("2.5"), "whole": Decimal("3"), "day": date(2026, 5, 1), "pair": (1, "x")}
    expected = {"1": 2.5, "whole": 3, "day": "2026-05-01", "pair": [1, "x"]}
    assert run(sandbox, "local v = ... return v", value) == expected


def test_every_kind_of_input_member_crosses_in_place(sandbox: Sandbox) -> None:
    # Plain members, nested ones and non-plain ones mixed in one map and one list, a read-only mapping, and
    # a tuple: each member keeps its place whichever way it is encoded.
    value = {
        "mixed": [1, {"a": Decimal("2")}, "x", [True, None], date(2026, 1, 2)],
        "view": MappingProxyType({"k": 1, "nested": {"n": [3]}}),
        "pair": ("a", 1),
        7: "seven",
    }
    expected = {
        "mixed": [1, {"a": 2}, "x", [True], "2026-01-02"],  # Lua drops a trailing nil from a list
        "view": {"k": 1, "nested": {"n": [3]}},
        "pair": ["a", 1],
        "7": "seven",
    }
    assert run(sandbox, "local v = ... return v", value) == expected


class Key(str):
    """A string of another type: its map takes the member-by-member encoding."""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1, "b": "x", "c": None, "d": True, "e": 2.5}, {"a": 1, "b": "x", "d": True, "e": 2.5}),
        ({"a": 1, Key("b"): "x"}, {"a": 1, "b": "x"}),
        ({"a": 1, 2: "x"}, {"a": 1, "2": "x"}),
        ({"a": 1, "b": Decimal("2.5")}, {"a": 1, "b": 2.5}),
        ({}, {}),
        ([1, "x", False, 2.5], [1, "x", False, 2.5]),
        ([1, "x", Decimal("3")], [1, "x", 3]),
        ((1, "x"), [1, "x"]),
        ([Key("k"), 1], ["k", 1]),
    ],
)
def test_flat_and_member_by_member_inputs_cross_alike(sandbox: Sandbox, value: object, expected: object) -> None:
    assert run(sandbox, "local v = ... return v", value) == expected


def test_inputs_nested_too_deep_are_refused(sandbox: Sandbox) -> None:
    value: list[object] = []
    for _ in range(40):
        value = [value, 1]
    with pytest.raises(ScriptError, match="input nested deeper than"):
        run(sandbox, "return 1", value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return type", "returned a function"),
        ("return {1, nil, 3}", "list with holes"),
        ("return {[true] = 1}", "non-string key"),
        ("return 0/0", "non-finite"),
        ("local t = {} t.t = t return t", "nested deeper"),
        ("return '\\xff'", "not valid UTF-8"),
    ],
)
def test_unrepresentable_results_are_errors(sandbox: Sandbox, body: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        run(sandbox, body)


# A flat result whose keys are all strings (or 1..n) and whose members are all JSON scalars is copied out without
# the member-by-member checks; anything else takes them. Side by side, one of each, to the same answer or error.
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return {a = 1, b = 'x', c = true, d = 2.5}", {"a": 1, "b": "x", "c": True, "d": 2.5}),
        ("return {a = 1, b = 'x', c = {true}, d = 2.5}", {"a": 1, "b": "x", "c": [True], "d": 2.5}),
        ("return {1, 'x', false, -0.5}", [1, "x", False, -0.5]),
        ("return {1, 'x', {false}, -0.5}", [1, "x", [False], -0.5]),
        ("return array()", []),
        ("return array({math.maxinteger, math.mininteger})", [2**63 - 1, -(2**63)]),
    ],
)
def test_plain_results_convert_as_checked_ones(sandbox: Sandbox, body: str, expected: object) -> None:
    assert run(sandbox, body) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return {a = 1/0}", r"returned a non-finite number \(inf\)"),
        ("return {a = {1/0}}", r"returned a non-finite number \(inf\)"),
        ("return {1, -1/0}", r"returned a non-finite number \(-inf\)"),
        ("return {1, {-1/0}}", r"returned a non-finite number \(-inf\)"),
        ("return {a = 0/0}", "returned a non-finite number"),
        ("return {a = type}", "returned a function"),
        ("return {1, 2, type}", "returned a function"),
        ("return {a = 1, [2] = 3}", r"non-string key \(2\)"),
        ("return {a = 1, [2.5] = 3}", r"non-string key \(2.5\)"),
        ("return {a = 1, [2] = {}}", r"non-string key \(2\)"),
        ("return setmetatable({a = 1}, {__metatable = 'array'})", "list with holes"),
        ("return {[1] = 'a', [3] = 'c'}", "list with holes"),
    ],
)
def test_unrepresentable_members_are_errors_in_plain_and_nested_results(
    sandbox: Sandbox, body: str, message: str
) -> None:
    with pytest.raises(ScriptError, match=message):
        run(sandbox, body)


def test_runtime_errors_carry_the_message_and_line(sandbox: Sandbox) -> None:
    script = sandbox.compile("return function(x)\n  local y = 1\n  return x.field.deeper\nend", "score")
    with pytest.raises(ScriptError) as exc:
        script({})
    assert exc.value.detail.startswith("score:3: attempt to index a nil value") and exc.value.line == 3


def test_compile_errors_carry_the_line(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError) as exc:
        sandbox.compile("return function()\n  local = 1\nend", "bad")
    assert "does not compile: bad:2:" in exc.value.detail and exc.value.line == 2


def test_a_chunk_must_return_a_function(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError, match="must return a function"):
        sandbox.compile("return 5", "five")()


def test_bytecode_is_not_loaded(sandbox: Sandbox) -> None:
    with pytest.raises(ScriptError, match="attempt to load a binary chunk"):
        sandbox.compile("\x1bLua", "bin")


def test_standard_library_helpers(sandbox: Sandbox) -> None:
    body = """
    return {
      split = string.split("a,b,,c", ","), trim = string.trim("  x "), up = ("abc"):upper(),
      starts = string.startswith("guest-1", "guest"),
      mapped = table.map({1, 2, 3}, function(v) return v * 2 end),
      kept = table.filter({1, 2, 3, 4}, function(v) return v % 2 == 0 end),
      has = table.contains({"a", "b"}, "b"),
      round = math.round(2.345, 2), clamp = math.clamp(15, 0, 10),
      later = date.add_days("2026-02-27", 3), span = date.days_between("2026-01-01", "2026-03-01"),
      stamp = date.format(date.parse("2026-05-04T10:20:30Z"), true),
    }"""
    assert run(sandbox, body) == {
        "split": ["a", "b", "", "c"], "trim": "x", "up": "ABC", "starts": True, "mapped": [2, 4, 6],
        "kept": [2, 4], "has": True, "round": 2.35, "clamp": 10, "later": "2026-03-02", "span": 59,
        "stamp": "2026-05-04T10:20:30Z",
    }  # fmt: skip


def test_date_parse_agrees_with_python_across_calendars_and_offsets(sandbox: Sandbox) -> None:
    # Seeded: 400 instants from 1600 to 2400 (leap centuries, pre-1970), written with and without time,
    # fractions and offsets; the sandbox's epoch seconds must equal Python's, to the second.
    rng = random.Random(20261123)
    parse = sandbox.compile("return function(s) return date.parse(s) end", "parse")
    for _ in range(400):
        instant = datetime(1600, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(800 * 365 * 86400))
        offset = timedelta(minutes=15 * rng.randrange(-48, 57))
        local = instant.astimezone(timezone(offset))
        text = local.strftime("%Y-%m-%dT%H:%M:%S") + rng.choice(["", ".250"]) + local.strftime("%z")
        assert parse(text) == int(instant.timestamp()), text
        assert parse(instant.strftime("%Y-%m-%dT%H:%M:%SZ")) == int(instant.timestamp())
        day = datetime(instant.year, instant.month, instant.day, tzinfo=UTC)
        assert parse(instant.strftime("%Y-%m-%d")) == int(day.timestamp())


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29",
        "1900-02-29",
        "2026-13-01",
        "2026-04-31",
        "2026-00-10",
        "2026-05-04T25:00",
        "2025-02-29T10:00:00Z",  # the one-match shape takes the same checks
        "2026-04-31T00:00:00Z",
        "2026-05-04T24:00:00Z",
        "2026-05-04T10:60:00Z",
        "2026-05-04X",
        "26-05-04",
        "",
    ],
)
def test_date_parse_refuses_impossible_dates(sandbox: Sandbox, text: str) -> None:
    assert run(sandbox, "return date.parse(...)", text) is None


def test_remembered_date_parses_answer_as_fresh_ones(sandbox: Sandbox) -> None:
    """Parses are remembered across calls (a bounded memo, emptied when full): the same text parsed again, after
    more distinct dates than the memo holds, and an impossible date asked twice, each answer as the first time;
    and nothing of the memo is reachable from a script."""
    parse = sandbox.compile("return function(s) return date.parse(s) end", "parse")
    first = {text: parse(text) for text in ("2026-11-23", "2026-05-04T10:20:30Z", "2026-04-31", "x" * 100)}
    assert first["2026-11-23"] == int(datetime(2026, 11, 23, tzinfo=UTC).timestamp())
    assert first["2026-04-31"] is None and first["x" * 100] is None
    start = datetime(2000, 1, 1, tzinfo=UTC)
    for day in range(5000):  # past the memo's 4,096 entries
        stamp = start + timedelta(days=day)
        assert parse(stamp.strftime("%Y-%m-%d")) == int(stamp.timestamp())
        if day % 1000 == 0:
            assert {text: parse(text) for text in first} == first
    assert {text: parse(text) for text in first} == first
    leaks = "local n = 0 for _ in pairs(date) do n = n + 1 end return {n, date.memo == nil}"
    assert run(sandbox, leaks) == [4, True]  # parse, format, days_between, add_days: no memo among them


def test_date_parse_keeps_leap_days_and_the_time_of_day(sandbox: Sandbox) -> None:
    body = """return {
      date.days_between("2024-02-28", "2024-03-01"), date.days_between("2000-02-28", "2000-03-01"),
      date.add_days("2024-02-28T23:30:00+01:00", 1),
    }"""
    assert run(sandbox, body) == [2, 2, "2024-02-29T22:30:00Z"]
