-- Append events to one shard of the log once per ref, and note which earlier entries were applied.
-- Prevents: a client's retry (same ref) appearing twice in the log — each ref's marker and its stream
-- entry are written in one step — and, through the "applied" notes, the recovery consumer re-applying
-- every event a second time (it skips an entry whose marker says its request applied it).
-- KEYS[1] stream, KEYS[2..1+n] markers of the n events to append, KEYS[2+n..] markers of events whose
-- requests have applied them since (all in the shard's {ev:n} slot)
-- ARGV[1] marker TTL seconds, ARGV[2] stream max length, ARGV[3] n, then per event its ref and its JSON
local n = tonumber(ARGV[3])
local created = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + i]) == 1 then
    created[i] = 0
  else
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[2 + 2 * i], 'e', ARGV[3 + 2 * i])
    redis.call('SET', KEYS[1 + i], id, 'EX', ARGV[1])
    created[i] = 1
  end
end
-- XX: a marker that expired stays expired; KEEPTTL: noting an application does not extend its life.
for i = 2 + n, #KEYS do
  redis.call('SET', KEYS[i], 'applied', 'XX', 'KEEPTTL')
end
return created
