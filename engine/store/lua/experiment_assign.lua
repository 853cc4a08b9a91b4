-- Record guests' assignments, one hash field per experiment (`as:<experiment>`, see ASSIGNMENT_FIELD in
-- engine/store/redis.py): a fixed split keeps the guest's first (HSETNX), a bandit the latest (HSET).
-- One call per flush (per slot on a cluster) rather than a command per exposure: packing and reading back a
-- command each cost the worker more than the script costs Redis.
-- KEYS guest hashes; ARGV per key, in order: field, entry JSON, keep ("1": keep an existing entry). A guest may
-- appear more than once: its entries apply in order (the last exposure is the last touch).
for i, key in ipairs(KEYS) do
  redis.call(ARGV[3 * i] == '1' and 'HSETNX' or 'HSET', key, ARGV[3 * i - 2], ARGV[3 * i - 1])
end
return #KEYS
