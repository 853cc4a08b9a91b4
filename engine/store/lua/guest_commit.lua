-- Compare-and-set one guest: write its fields only if its revision is still the one we read and none of
-- the operation's tokens was applied before.
-- Prevents: a concurrent event's update being overwritten (lost update), and a retried event (or batch),
-- or a merge replayed after a crash, being applied twice.
-- KEYS[1] guest hash, KEYS[2] applied-token sorted set (same {g:ref} slot)
-- ARGV[1] expected rev, ARGV[2] now_ms, ARGV[3] tokens kept, ARGV[4] n checked tokens (dedupe: all must be
-- new), ARGV[5] m carried tokens (remembered, not checked), then the n checked tokens, the m carried
-- tokens, then field/value pairs (an empty value deletes its field)
local n = tonumber(ARGV[4])
local m = tonumber(ARGV[5])
for i = 6, 5 + n do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    return -1
  end
end
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if rev ~= tonumber(ARGV[1]) then
  return -2
end
local fields = {}
local gone = {}
for i = 6 + n + m, #ARGV, 2 do
  local value = ARGV[i + 1]
  if value == '' then
    -- An empty value deletes the field (no field holds an empty string: each is JSON): a session's events
    -- field once the session is gone or kept none.
    gone[#gone + 1] = ARGV[i]
  elseif string.sub(ARGV[i], 1, 3) == 'as:' then
    -- Experiment exposures write assignment fields straight into the hash, maybe between this writer's read and
    -- now, and on a guest with no profile yet (whose rev the read saw as absent): a stored entry wins over the
    -- writer's (an identity merge's folded ones, a migrated map's).
    redis.call('HSETNX', KEYS[1], ARGV[i], value)
  else
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = value
  end
end
for _, name in ipairs(gone) do
  if name == 'assignments' then
    -- The map processes from before the per-experiment fields wrote: the writer read its entries into fields of
    -- their own; entries added to it since (a process not yet upgraded) are folded in too, unless a field has one.
    local stored = redis.call('HGET', KEYS[1], 'assignments')
    if stored then
      for experiment, entry in pairs(cjson.decode(stored)) do
        redis.call('HSETNX', KEYS[1], 'as:' .. experiment, cjson.encode(entry))
      end
    end
  end
end
fields[#fields + 1] = 'rev'
fields[#fields + 1] = rev + 1
redis.call('HSET', KEYS[1], unpack(fields))
if #gone > 0 then
  redis.call('HDEL', KEYS[1], unpack(gone))
end
local now = tonumber(ARGV[2])
for i = 6, 5 + n + m do
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
if n + m > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
end
return rev + 1
