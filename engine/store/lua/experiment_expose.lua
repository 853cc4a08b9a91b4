-- Open an attribution unit once. Prevents two processes serving the same fixed-split guest at the same
-- moment from both counting a first exposure; takes up a reward parked before the unit existed.
-- KEYS[1] unit hash, KEYS[2] the unit's parked-reward key; ARGV: arm, epoch, at_ms, deadline_ms, ttl_s
-- Returns {opened (0/1), parked reward value or ''}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, ''}
end
redis.call('HSET', KEYS[1], 'arm', ARGV[1], 'epoch', ARGV[2], 'at_ms', ARGV[3], 'deadline_ms', ARGV[4], 'rewarded', '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
local parked = redis.call('GET', KEYS[2])
if parked then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'rewarded', '1')
  return {1, parked}
end
return {1, ''}
