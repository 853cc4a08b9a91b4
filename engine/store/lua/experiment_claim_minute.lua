-- Claim the reward of a decision's unit filed in its minute's hash (experiment_expose_minute.lua). Prevents
-- a retried or replayed reward (same decision, same event) being counted twice when deliveries race.
-- KEYS[1] the minute's unit hash; ARGV: decision id (16 bytes), the decision's age (ms), value ('' for none),
-- park_ttl_ms.
-- Returns {status, arm, epoch}. A reward that outruns its exposure is parked in the same hash, and
-- experiment_expose_minute.lua counts it when the unit opens.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry or string.sub(entry, 1, 1) == '@' then
  -- A unit not open a minute after its decision never will be: only a recent decision's reward is parked.
  if entry or ARGV[3] == '' or tonumber(ARGV[2]) > tonumber(ARGV[4]) then
    return {'unknown', '', ''}
  end
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  else
    redis.call('HSETNX', KEYS[1], 'p:' .. ARGV[1], ARGV[3])
  end
  return {'parked', '', ''}
end
local rewarded, window_s, epoch, arm = string.match(entry, '^([01])|(%d+)|([^|]*)|(.*)$')
if rewarded == '1' then
  return {'duplicate', arm, epoch}
end
if tonumber(ARGV[2]) > tonumber(window_s) * 1000 then
  return {'late', arm, epoch}
end
redis.call('HSET', KEYS[1], ARGV[1], '1' .. string.sub(entry, 2))
return {'counted', arm, epoch}
