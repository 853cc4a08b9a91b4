-- Open the attribution units of decisions served in one minute (one shard of it), once each. Prevents two
-- deliveries of the same exposure counting twice; takes up rewards parked before their unit existed.
-- KEYS[1] the minute's unit hash; ARGV[1] its TTL (ms, only ever raised); then pairs of decision id (16 bytes)
-- and entry: "<rewarded 0|1>|<window_s>|<epoch>|<arm>" opens a unit, "@<unit>" points a decision at its guest's
-- unit.
-- Returns, per pair, opened (0/1) and the parked reward value or '' (for a pointer, the reward parked under the
-- decision before it was written: the caller counts it on the guest's unit).
local out = {}
for i = 2, #ARGV, 2 do
  local id, entry = ARGV[i], ARGV[i + 1]
  if string.sub(entry, 1, 1) == '@' then
    redis.call('HSET', KEYS[1], id, entry)
    local parked = redis.call('HGET', KEYS[1], 'p:' .. id)
    if parked then
      redis.call('HDEL', KEYS[1], 'p:' .. id)
    end
    out[#out + 1], out[#out + 2] = 0, parked or ''
  elseif redis.call('HSETNX', KEYS[1], id, entry) == 1 then
    local parked = redis.call('HGET', KEYS[1], 'p:' .. id)
    if parked then
      redis.call('HDEL', KEYS[1], 'p:' .. id)
      redis.call('HSET', KEYS[1], id, '1' .. string.sub(entry, 2))
      out[#out + 1], out[#out + 2] = 1, parked
    else
      out[#out + 1], out[#out + 2] = 1, ''
    end
  else
    out[#out + 1], out[#out + 2] = 0, ''
  end
end
-- PTTL is -1 for a hash this call created; a shorter TTL is a parked reward's.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return out
