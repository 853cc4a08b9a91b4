-- Open the attribution units of decisions served in one minute, once each. Prevents two deliveries of the same
-- exposure counting twice; takes up rewards parked before their unit existed.
-- KEYS: minute unit hashes (shards of one or several minutes: one call per flush on one server, per slot on a
-- cluster; the call itself, not its few commands, was most of what it cost Redis). ARGV, per key in order: its
-- TTL (ms, only ever raised), the number of pairs, then pairs of decision id (16 bytes) and entry:
-- "<rewarded 0|1>|<window_s>|<epoch>|<arm>" opens a unit, "@<unit>" points a decision at its guest's unit.
-- Returns, per pair in order, opened (0/1) and the parked reward value or '' (for a pointer, the reward parked
-- under the decision before it was written: the caller counts it on the guest's unit).
local out = {}
local a = 1
for _, key in ipairs(KEYS) do
  local ttl_ms, pairs_n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, pairs_n do
    local id, entry = ARGV[a], ARGV[a + 1]
    a = a + 2
    if string.sub(entry, 1, 1) == '@' then
      redis.call('HSET', key, id, entry)
      local parked = redis.call('HGET', key, 'p:' .. id)
      if parked then
        redis.call('HDEL', key, 'p:' .. id)
      end
      out[#out + 1], out[#out + 2] = 0, parked or ''
    elseif redis.call('HSETNX', key, id, entry) == 1 then
      local parked = redis.call('HGET', key, 'p:' .. id)
      if parked then
        redis.call('HDEL', key, 'p:' .. id)
        redis.call('HSET', key, id, '1' .. string.sub(entry, 2))
        out[#out + 1], out[#out + 2] = 1, parked
      else
        out[#out + 1], out[#out + 2] = 1, ''
      end
    else
      out[#out + 1], out[#out + 2] = 0, ''
    end
  end
  -- PTTL is -1 for a hash this call created; a shorter TTL is a parked reward's.
  if redis.call('PTTL', key) < ttl_ms then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end
return out
