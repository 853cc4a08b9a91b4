-- KEYS[1] model meta hash, KEYS[2] states hash
-- ARGV[1] expected rev, ARGV[2] pointers JSON, ARGV[3..] version, state pairs
-- Compare-and-set: the lifecycle rules run in Python (engine.lifecycle); this applies their result only if
-- nobody changed the model since we read it, so two concurrent publishes cannot both win.
local rev = redis.call('HGET', KEYS[1], 'rev') or '0'
if rev ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'pointers', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return 1
