-- Acknowledge, for the recovery consumer, the log entries whose requests have applied them.
-- Prevents: the consumer re-applying (read guest, compare-and-set, JSON) every event a second time.
-- Only a marker that says "applied" acknowledges its entry; a missing (expired) marker or one still
-- holding the entry id leaves it pending, so at worst an event is re-applied (a no-op), never skipped.
-- One script per batch: every check and acknowledgement of a batch in one round trip.
-- KEYS[1] stream, KEYS[2..] the entries' ref markers (all in the shard's {ev:n} slot)
-- ARGV[1] consumer group, ARGV[2..] the entries' ids, in KEYS order
-- Returns per entry 1 (applied, now acknowledged) or 0 (not known to be applied: still pending).
local out = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == 'applied' then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
