-- Record a guest's assignment in the guest document's `assignments` map (moved to the survivor on an
-- identity merge). Prevents a read-modify-write of the JSON field racing an event or a merge that
-- rewrites the same field.
-- KEYS[1] guest hash; ARGV: experiment key, entry JSON, keep ("1": keep an existing entry)
local raw = redis.call('HGET', KEYS[1], 'assignments')
local map = {}
if raw then
  map = cjson.decode(raw)
end
if ARGV[3] == '1' and map[ARGV[1]] ~= nil then
  return 0
end
map[ARGV[1]] = cjson.decode(ARGV[2])
redis.call('HSET', KEYS[1], 'assignments', cjson.encode(map))
return 1
