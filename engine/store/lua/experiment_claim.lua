-- Claim a unit's reward. Prevents a retried or replayed reward (same decision, same event) being
-- counted twice when deliveries race.
-- KEYS[1] unit hash; ARGV: now_ms. Returns {status, arm, epoch}.
local u = redis.call('HMGET', KEYS[1], 'arm', 'epoch', 'deadline_ms', 'rewarded')
if not u[1] then
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
