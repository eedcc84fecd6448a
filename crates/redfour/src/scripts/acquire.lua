-- redfour acquire: one attempt, one round trip.
-- KEYS[1] lock key (a hash: field `index` plus holder metadata)
-- KEYS[2] counter key (a string integer)
-- ARGV[1] ttl in milliseconds
-- ARGV[2..] holder metadata as field, value pairs
-- Returns {1, index, ttl} when acquired, {0, -1, pttl} when held by someone else.
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then
  -- Something is there: a lock, or foreign data that must be left alone.
  local kind = redis.call('TYPE', KEYS[1])['ok']
  if kind ~= 'hash' then
    return redis.error_reply('REDFOUR_WRONGTYPE the lock key holds a ' .. kind .. ', not a hash')
  end
  if pttl < 0 then
    return redis.error_reply('REDFOUR_CORRUPT the lock hash has no expiry')
  end
  return {0, -1, pttl}
end

-- The counter may be gone (restart without persistence) or may have been reset by someone:
-- floor the next index at the server clock in microseconds so that indexes keep increasing.
-- That stays below 2^53, so JavaScript numbers (Node redfour) still hold it exactly.
local raw = redis.pcall('GET', KEYS[2])
if type(raw) == 'table' then
  return redis.error_reply('REDFOUR_WRONGTYPE the counter key holds a '
    .. redis.call('TYPE', KEYS[2])['ok'] .. ', not a string')
end
local current = nil
if raw then
  if string.len(raw) > 17 or not string.match(raw, '^%-?%d+$') then
    return redis.error_reply('REDFOUR_CORRUPT the counter is not an integer')
  end
  current = tonumber(raw)
  if current >= 9007199254740991 then
    return redis.error_reply('REDFOUR_CORRUPT the counter is at or beyond 2^53-1')
  end
end

local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local index = floor
if current ~= nil and current >= floor then
  index = current + 1
end
-- string.format('%d') keeps every digit; Lua's default number formatting would not.
local sindex = string.format('%d', index)
redis.call('SET', KEYS[2], sindex)
redis.call('HSET', KEYS[1], 'index', sindex,
  'acquired_at', string.format('%d', math.floor(floor / 1000)), unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, index, tonumber(ARGV[1])}
