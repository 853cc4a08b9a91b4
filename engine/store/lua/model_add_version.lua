-- KEYS[1] model meta hash, KEYS[2] versions hash, KEYS[3] states hash
-- ARGV[1] version document (JSON), ARGV[2] content digest of the definition
-- One script so two concurrent uploads can never be given the same version number, and an upload of content
-- already stored (two workers seeding the same models directory at once) returns that version instead.
local existing = redis.call('HGET', KEYS[1], 'digest:' .. ARGV[2])
if existing then
  return {tonumber(existing), 0}
end
local v = redis.call('HINCRBY', KEYS[1], 'latest', 1)
redis.call('HSET', KEYS[2], v, ARGV[1])
redis.call('HSET', KEYS[3], v, 'draft')
redis.call('HSET', KEYS[1], 'digest:' .. ARGV[2], v)
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return {v, 1}
