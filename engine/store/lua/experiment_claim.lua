-- Claim a unit's reward. Prevents a retried or replayed reward (same decision, same event) being
-- counted twice when deliveries race.
-- KEYS[1] unit hash, KEYS[2] the unit's parked-reward key
-- ARGV: now_ms, value ('' for none), park_ttl_ms. Returns {status, arm, epoch}.
-- A reward may reach one process before the process that served the decision has flushed its exposure
-- (a few ms): it is parked, and experiment_expose.lua counts it when the unit opens — never dropped.
local u = redis.call('HMGET', KEYS[1], 'arm', 'epoch', 'deadline_ms', 'rewarded')
if not u[1] then
  if ARGV[2] ~= '' then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[3]), 'NX')
    return {'parked', '', ''}
  end
  return {'unknown', '', ''}
end
if u[4] == '1' then
  return {'duplicate', u[1], u[2]}
end
if tonumber(ARGV[1]) > tonumber(u[3]) then
  return {'late', u[1], u[2]}
end
redis.call('HSET', KEYS[1], 'rewarded', '1')
return {'counted', u[1], u[2]}
