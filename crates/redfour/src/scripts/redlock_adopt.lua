-- redfour Redlock adopt: once a majority of masters granted the lock, each granting master
-- stores the one index the holder uses everywhere (the largest any of them granted), and its
-- counter is raised to at least that index, so that any later majority (which shares a master
-- with this one) grants a larger index.
-- KEYS[1] lock key; KEYS[2] counter key; ARGV[1] the index this master granted; ARGV[2] the
-- adopted index. Returns 1 when adopted, 0 when this master's grant is gone (expired, taken).
local _, stored = redfour_lock(KEYS[1])
if stored ~= ARGV[1] then
  return 0
end
local adopted = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'index', ARGV[2])
-- Raise the counter (SET ... GET, then put a larger value back: the commands of the minimal
-- ACL rule, no GET). The counter was just used by this master's grant, so it holds a number.
local previous = redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL', 'GET')
local current = tonumber(previous)
if current ~= nil and current > adopted then
  redis.call('SET', KEYS[2], previous, 'KEEPTTL')
end
return 1
