-- Record guests' assignments in each guest document's `assignments` map (moved to the survivor on an identity
-- merge). Prevents a read-modify-write of the JSON field racing an event or a merge that rewrites the same field.
-- One call per batch of exposures (per slot on a cluster): the script call itself, not the map's JSON, was most
-- of what an exposure cost Redis (benchmarks/RESULTS.md, session 12).
-- KEYS guest hashes; ARGV per key, in order: experiment key, entry JSON, keep ("1": keep an existing entry). A
-- guest may appear more than once: its entries apply in order (the last exposure is the last touch).
-- Returns how many entries were written.
local written = 0
for i, key in ipairs(KEYS) do
  local experiment, entry, keep = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local raw = redis.call('HGET', key, 'assignments')
  local map = {}
  if raw then
    map = cjson.decode(raw)
  end
  if keep ~= '1' or map[experiment] == nil then
    map[experiment] = cjson.decode(entry)
    redis.call('HSET', key, 'assignments', cjson.encode(map))
    written = written + 1
  end
end
return written
