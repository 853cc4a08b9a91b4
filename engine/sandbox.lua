-- The script sandbox, run once per LuaRuntime before anything else (engine/sandbox.py).
--
-- It captures the few dangerous functions it needs (debug.sethook, debug.setupvalue, load) as upvalues
-- and hands Python a table of three functions; scripts never see the real globals, only SAFE below,
-- through a fresh environment table per call.
local sethook, setupvalue, getinfo = debug.sethook, debug.setupvalue, debug.getinfo
local load, pcall, error, type, select, next = load, pcall, error, type, select, next
local setmetatable, getmetatable, rawget, tostring = setmetatable, getmetatable, rawget, tostring
local string_rep, string_format, string_sub, string_match = string.rep, string.format, string.sub, string.match
local ipairs, pairs, unpack, math_max, math_min = ipairs, pairs, table.unpack, math.max, math.min
local os_date, math_floor = os.date, math.floor

-- Set by engine/sandbox.py, so each limit is written once: string.rep's cap, how deep a result may nest,
-- and how many tokens (below) a result may return as values before it comes back as a table.
local MAX_STRING_BYTES, MAX_DEPTH, MAX_RETURNED_TOKENS = ...
local BUDGET_EXHAUSTED = "instruction budget exhausted"
local BOOTSTRAP_SOURCE = debug.getinfo(1, "S").source

-- Read-only views: a script may read string.upper but never replace it for the next request.
local function frozen(name, t)
  return setmetatable({}, {
    __index = t,
    __newindex = function() error("cannot modify the standard library table '" .. name .. "'", 2) end,
    -- An iterator closure rather than (next, t): handing out t itself would make it writable.
    __pairs = function()
      local k
      return function() local v; k, v = next(t, k); return k, v end
    end,
    __metatable = false,
  })
end

local function pick(lib, names)
  local out = {}
  for _, n in ipairs(names) do out[n] = lib[n] end
  return out
end

local function safe_rep(s, n, sep)
  local size = #tostring(s) * (tonumber(n) or 0) + #(sep or "") * math_max((tonumber(n) or 0) - 1, 0)
  if size > MAX_STRING_BYTES then
    error(string_format("string.rep would build %d bytes; the limit is %d", size, MAX_STRING_BYTES), 2)
  end
  return string_rep(s, n, sep)
end

local strings = pick(string, {"byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match",
                               "reverse", "sub", "upper"})
strings.rep = safe_rep
function strings.split(s, sep)
  local out, from = {}, 1
  sep = sep or ","
  if sep == "" then error("split: empty separator", 2) end
  while true do
    local i, j = s:find(sep, from, true)
    if not i then out[#out + 1] = string_sub(s, from); return out end
    out[#out + 1] = string_sub(s, from, i - 1)
    from = j + 1
  end
end
function strings.trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
function strings.startswith(s, prefix) return string_sub(s, 1, #prefix) == prefix end

-- Strings index their methods through the shared string metatable: point it at the safe table and
-- lock it, so ("").rep is the capped rep and getmetatable("") reveals nothing.
local string_mt = getmetatable("")
string_mt.__index = strings
string_mt.__metatable = false

-- Marks a table as a JSON array so an empty one comes back as [] rather than {}.
local ARRAY_MT = {__metatable = "array"}
local function array(t)
  t = t or {}
  if type(t) ~= "table" then error("array() takes a table", 2) end
  return setmetatable(t, ARRAY_MT)
end

local tables = pick(table, {"concat", "insert", "remove", "sort", "unpack", "pack", "move"})
function tables.map(t, f) local out = array() for i, v in ipairs(t) do out[i] = f(v, i) end return out end
function tables.filter(t, f)
  local out = array() for _, v in ipairs(t) do if f(v) then out[#out + 1] = v end end return out
end
function tables.keys(t) local out = array() for k in pairs(t) do out[#out + 1] = k end return out end
function tables.contains(t, x) for _, v in ipairs(t) do if v == x then return true end end return false end

local maths = pick(math, {"abs", "ceil", "floor", "fmod", "huge", "max", "min", "modf", "pi", "sqrt", "exp",
                          "log", "tointeger", "type", "ult", "maxinteger", "mininteger"})
function maths.round(x, places)
  local m = 10 ^ (places or 0)
  return math_floor(x * m + 0.5) / m
end
function maths.clamp(x, lo, hi) return math_max(lo, math_min(hi, x)) end

-- Dates are ISO strings in and out (that is how guests and contexts carry them); arithmetic in UTC.
-- Parsing is calendar arithmetic (days from the civil date, proleptic Gregorian) rather than os.time:
-- os.time reads its table as local time, and glibc's mktime stats /etc/localtime on every call, which
-- was four system calls and ~80 % of a script that compared two dates.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end
local DAYS_IN_MONTH = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

local dates = {}
-- "2026-05-04", "2026-05-04T10:20:30Z", "2026-05-04 10:20", "2026-05-04T10:20:30.250+02:00" → epoch s
-- (an offset is honoured, none means UTC); anything else, or an impossible date, → nil.
local function parse(s)
  -- The shape guests and contexts carry ("2026-05-04T10:20:30Z") in one match: four pattern operations
  -- fewer than the general path below, which was most of a script comparing two dates.
  local y, mo, d, h, mi, sec = string_match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)Z$")
  local rest, offset_s = "", 0
  if y then
    h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
    if h > 23 or mi > 59 or sec > 60 then return nil end
  else
    y, mo, d, rest = string_match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
    if not y then return nil end
    h, mi, sec = 0, 0, 0
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > DAYS_IN_MONTH[mo] then return nil end
  if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then return nil end
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[T ](%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then sec, tail = tonumber(ss), tail2:gsub("^%.%d+", "") end
    if tail ~= "" and tail ~= "Z" then
      local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
      if not sign then return nil end
      offset_s = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
    end
    if h > 23 or mi > 59 or sec > 60 then return nil end
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s
end

-- Parses remembered across calls: most dates a script sees recur (the request's "today", a guest's last order),
-- and the pattern matching was half of a script that compared two (benchmarks/RESULTS.md, session 12). Only
-- the string → number function is shared, never a script's own values; short strings only, and a bounded count.
local MEMO_MAX_ENTRIES, MEMO_MAX_BYTES = 4096, 40
local memo, memo_entries = {}, 0
function dates.parse(s)
  if type(s) ~= "string" then return nil end
  local t = memo[s]
  if t ~= nil then return t or nil end
  t = parse(s)
  if #s <= MEMO_MAX_BYTES then
    if memo_entries >= MEMO_MAX_ENTRIES then memo, memo_entries = {}, 0 end
    memo[s], memo_entries = t or false, memo_entries + 1
  end
  return t
end
function dates.format(epoch_s, with_time)
  return os_date(with_time and "!%Y-%m-%dT%H:%M:%SZ" or "!%Y-%m-%d", math_floor(epoch_s))
end
function dates.days_between(a, b)
  local ta, tb = dates.parse(a), dates.parse(b)
  if not ta or not tb then return nil end
  return math_floor((tb - ta) / 86400)
end
function dates.add_days(s, n)
  local t = dates.parse(s)
  return t and dates.format(t + n * 86400, #s > 10) or nil
end

local function safe_getmetatable(v)
  if type(v) ~= "table" then return nil end
  return getmetatable(v)
end

local function safe_setmetatable(t, mt)
  -- A __gc finaliser would run later, during some other request's garbage collection and outside its
  -- budget; refusing it here is enough because Lua marks objects for finalisation only at this call.
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then error("__gc metamethods are not allowed", 2) end
  return setmetatable(t, mt)
end

local SAFE = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall, xpcall = xpcall,
  select = select, tonumber = tonumber, tostring = tostring, type = type, rawequal = rawequal, rawlen = rawlen,
  getmetatable = safe_getmetatable, setmetatable = safe_setmetatable, array = array,
  unpack = table.unpack, _VERSION = _VERSION,
  string = frozen("string", strings), table = frozen("table", tables), math = frozen("math", maths),
  utf8 = frozen("utf8", pick(utf8, {"char", "charpattern", "codepoint", "len", "offset", "codes"})),
  date = frozen("date", dates),
}
SAFE._G = nil
local ENV_MT = {__index = SAFE, __metatable = false}

local run, finish

local function on_budget_exhausted()
  local info = getinfo(2, "fSl")
  -- After exhaustion the hook fires on every instruction (below) until run's own epilogue clears it.
  if info.func == run or info.func == finish then return end
  -- From now on every instruction fails, so neither a script's pcall nor a __close handler can go on.
  sethook(on_budget_exhausted, "", 1)
  -- Outside the script's own chunk it was converting the script's result (see encode).
  local where = info.source == BOOTSTRAP_SOURCE and "the conversion of its result"
    or info.short_src .. ":" .. tostring(info.currentline)
  error(BUDGET_EXHAUSTED .. " at " .. where, 0)
end

local function compile(source, name)
  local chunk, err = load(source, "=" .. name, "t", {})
  return chunk, err
end

-- Values cross the boundary as one flat sequence of plain values ("tokens") each way, so a call is a
-- single crossing rather than one per table, key and value (engine/sandbox.py encodes and decodes the
-- Python side). A value is SCALAR v; FLAT_MAP n k1 v1 … or FLAT_LIST n v1 … when every member is a
-- scalar; MAP n k1 <value> … or LIST n <value> … otherwise. Tags sit where a tag is expected, so a
-- string or number never reads as one.
local SCALAR, MAP, LIST, FLAT_MAP, FLAT_LIST = 0, 1, 2, 3, 4
local HUGE = math.huge
local math_type = math.type

local function decode(t, i)
  local tag, n = t[i], t[i + 1]
  if tag == SCALAR then return n, i + 2 end
  local out = {}
  i = i + 2
  if tag == FLAT_MAP then
    for _ = 1, n do out[t[i]] = t[i + 1]; i = i + 2 end
  elseif tag == FLAT_LIST then
    for j = 1, n do out[j] = t[i + j - 1] end
    i = i + n
  elseif tag == MAP then
    for _ = 1, n do
      local k = t[i]
      local v
      v, i = decode(t, i + 1)
      out[k] = v
    end
  else
    for j = 1, n do
      local v
      v, i = decode(t, i)
      out[j] = v
    end
  end
  return out, i
end

-- A scalar result, checked: nil, booleans, strings and finite numbers are JSON; nothing else is.
local function scalar(v)
  local tv = type(v)
  if tv == "number" then
    if v ~= v or v == HUGE or v == -HUGE then
      error("returned a non-finite number (" .. tostring(v) .. "); results must be JSON", 0)
    end
  elseif tv ~= "string" and tv ~= "boolean" and tv ~= "nil" then
    error("returned a " .. tv .. "; results must be plain data", 0)
  end
  return v
end

local function encode(v, out, n, depth)
  if type(v) ~= "table" then
    out[n + 1], out[n + 2] = SCALAR, scalar(v)
    return n + 2
  end
  if depth > MAX_DEPTH then
    error("returned a value nested deeper than " .. MAX_DEPTH .. " levels (a cycle?)", 0)
  end
  -- Raw iteration (next, rawget): a script's __pairs or __index must not decide what leaves the sandbox.
  -- The first pass also notes whether every key is a string and every member a JSON scalar ("plain"): the
  -- usual result (a small map) is then copied without the per-member checks of the second pass, which
  -- could find nothing to refuse. The benchmark's loyalty node: 121 k → 118 k instructions per call.
  local count, min_key, max_key, all_integers, all_strings, flat, plain = 0, nil, 0, true, true, true, true
  for k, x in next, v do
    count = count + 1
    if type(k) == "string" then
      all_integers = false
    elseif math_type(k) == "integer" then
      all_strings = false
      if k > max_key then max_key = k end
      if min_key == nil or k < min_key then min_key = k end
    else
      all_integers, all_strings = false, false
    end
    local tx = type(x)
    if tx == "table" then
      flat = false
    elseif tx == "number" then
      if x ~= x or x == HUGE or x == -HUGE then plain = false end
    elseif tx ~= "string" and tx ~= "boolean" then
      plain = false
    end
  end
  if getmetatable(v) == "array" or (count > 0 and all_integers) then
    if not all_integers or max_key ~= count or (count > 0 and min_key ~= 1) then
      error("returned a list with holes (keys must be 1..n)", 0)
    end
    out[n + 1], out[n + 2] = flat and FLAT_LIST or LIST, count
    n = n + 2
    if flat and plain then
      for j = 1, count do out[n + j] = rawget(v, j) end
      return n + count
    end
    for j = 1, count do
      if flat then
        n = n + 1
        out[n] = scalar(rawget(v, j))
      else
        n = encode(rawget(v, j), out, n, depth + 1)
      end
    end
    return n
  end
  out[n + 1], out[n + 2] = flat and FLAT_MAP or MAP, count
  n = n + 2
  if flat and plain and all_strings then
    for k, x in next, v do
      out[n + 1], out[n + 2] = k, x
      n = n + 2
    end
    return n
  end
  for k, x in next, v do
    if type(k) ~= "string" then error("returned a map with a non-string key (" .. tostring(k) .. ")", 0) end
    n = n + 1
    out[n] = k
    if flat then
      n = n + 1
      out[n] = scalar(x)
    else
      n = encode(x, out, n, depth + 1)
    end
  end
  return n
end

-- Results up to MAX_RETURNED_TOKENS return as multiple values (converted in one go); larger ones as a table.
local function export(...)
  if select("#", ...) == 0 then return 0 end
  local out = {}
  local n = encode((...), out, 0, 0)
  if n > MAX_RETURNED_TOKENS then return -n, out end
  return n, unpack(out, 1, n)
end

-- Tokens i..j of a large result, counted first (so Python always gets a tuple): read in order by index.
local function slice(t, i, j)
  return j - i + 1, unpack(t, i, j)
end

function finish(ok, ...)
  sethook()
  if ok then return true, ... end
  local err = ...
  return false, tostring(err)
end

-- Run a compiled chunk: a fresh global table for this call, the inputs decoded from their tokens, the
-- instruction hook, then the function the chunk returns, called with the inputs; its first result is
-- encoded within the budget too (a result can be built to be costly to walk). Returns true, count,
-- tokens… (a large result: true, -count, {tokens}, read with slice) or false, message.
-- A negative nargs means the input tokens came as one table.
local function call(chunk, args, nargs)
  local fn = chunk()
  if type(fn) ~= "function" then
    error("the script must return a function (got " .. type(fn) .. ")", 0)
  end
  return export(fn(unpack(args, 1, nargs)))
end

function run(chunk, budget, nargs, ...)
  setupvalue(chunk, 1, setmetatable({}, ENV_MT))
  local tokens = nargs < 0 and ... or {...}
  nargs = nargs < 0 and -nargs or nargs
  local args, i = {}, 1
  for j = 1, nargs do args[j], i = decode(tokens, i) end
  sethook(on_budget_exhausted, "", budget)
  -- call is a named upvalue rather than a closure made per call: one allocation less.
  return finish(pcall(call, chunk, args, nargs))
end

return {compile = compile, run = run, slice = slice, budget_exhausted = BUDGET_EXHAUSTED}
