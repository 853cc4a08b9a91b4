-- Open an attribution unit once. Prevents two processes serving the same fixed-split guest at the same
-- moment from both counting a first exposure.
-- KEYS[1] unit hash; ARGV: arm, epoch, at_ms, deadline_ms, ttl_s
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'arm', ARGV[1], 'epoch', ARGV[2], 'at_ms', ARGV[3], 'deadline_ms', ARGV[4], 'rewarded', '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
