-- Delete an identifier index entry only if it still names this guest.
-- Prevents: forgetting a guest removing an identifier that meanwhile moved to another guest.
-- KEYS[1] identifier key; ARGV[1] guest ref
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
