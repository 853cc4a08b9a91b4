-- Append an event to the log once per ref: the ref's marker and the stream entry are written together.
-- Prevents: a client's retry (same ref) appearing twice in the log.
-- KEYS[1] stream, KEYS[2] ref marker (same {ev:n} slot)
-- ARGV[1] event JSON, ARGV[2] marker TTL seconds, ARGV[3] stream max length
local seen = redis.call('GET', KEYS[2])
if seen then
  return {0, seen}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return {1, id}
