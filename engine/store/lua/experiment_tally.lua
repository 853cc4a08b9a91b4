-- Add to an arm's totals and to its epoch's counters together. Prevents a reader (results, allocation)
-- seeing a total that its per-epoch counters do not add up to.
-- KEYS[1] arm tally hash; ARGV: epoch, exposures, rewarded, reward_sum, reward_sumsq
local e = ARGV[1]
local n, c = tonumber(ARGV[2]), tonumber(ARGV[3])
if n ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'n', n)
  redis.call('HINCRBY', KEYS[1], 'n@' .. e, n)
end
if c ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'c', c)
  redis.call('HINCRBY', KEYS[1], 'c@' .. e, c)
  redis.call('HINCRBYFLOAT', KEYS[1], 's', ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[1], 's@' .. e, ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[1], 'q', ARGV[5])
  redis.call('HINCRBYFLOAT', KEYS[1], 'q@' .. e, ARGV[5])
end
return 1
