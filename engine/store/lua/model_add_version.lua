-- KEYS[1] model meta hash, KEYS[2] versions hash, KEYS[3] states hash; ARGV[1] version document (JSON)
-- One script so two concurrent uploads can never be given the same version number.
local v = redis.call('HINCRBY', KEYS[1], 'latest', 1)
redis.call('HSET', KEYS[2], v, ARGV[1])
redis.call('HSET', KEYS[3], v, 'draft')
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return v
