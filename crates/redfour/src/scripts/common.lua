-- Shared functions of every redfour script (prepended to each of them).
-- Errors are raised as {err = 'CODE message'}: REDFOUR_WRONGTYPE for a key holding another
-- type, REDFOUR_CORRUPT for unusable contents. Foreign data is never written over.

local function redfour_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The lock's remaining ttl, or -2 when there is no lock; errors on foreign data.
local function redfour_lock_pttl(key)
  local pttl = redis.call('PTTL', key)
  if pttl == -2 then
    return -2
  end
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' then
    error({err = 'REDFOUR_WRONGTYPE the lock key holds a ' .. kind .. ', not a hash'})
  end
  if pttl < 0 then
    error({err = 'REDFOUR_CORRUPT the lock hash has no expiry'})
  end
  return pttl
end

-- The next fencing index: the counter plus one, floored at the server clock in microseconds.
local function redfour_next_index(counter, now_us)
  local current = nil
  local raw = redis.pcall('GET', counter)
  if type(raw) == 'table' then
    error({err = 'REDFOUR_WRONGTYPE the counter key holds a '
      .. redis.call('TYPE', counter)['ok'] .. ', not a string'})
  end
  if raw then
    if string.len(raw) > 17 or not string.match(raw, '^%-?%d+$') then
      error({err = 'REDFOUR_CORRUPT the counter is not an integer'})
    end
    current = tonumber(raw)
    if current >= 9007199254740991 then
      error({err = 'REDFOUR_CORRUPT the counter is at or beyond 2^53-1'})
    end
  end
  local index = now_us
  if current ~= nil and current >= now_us then
    index = current + 1
  end
  redis.call('SET', counter, string.format('%d', index))
  return index
end

-- Writes the lock for a new holder (the key is known to be free).
local function redfour_grant(key, counter, now_us, ttl, meta, token)
  local index = redfour_next_index(counter, now_us)
  local fields = {'index', string.format('%d', index),
    'acquired_at', string.format('%d', math.floor(now_us / 1000))}
  for i = 1, #meta do
    fields[#fields + 1] = meta[i]
  end
  if token then
    fields[#fields + 1] = 'handoff'
    fields[#fields + 1] = token
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
  return index
end

-- The index of the lock's holder, or nil when there is no lock; errors on foreign data.
local function redfour_held_index(key)
  local raw = redis.pcall('HGET', key, 'index')
  if type(raw) == 'table' then
    error({err = 'REDFOUR_WRONGTYPE the lock key holds a '
      .. redis.call('TYPE', key)['ok'] .. ', not a hash'})
  end
  if not raw then
    if redis.call('EXISTS', key) == 0 then
      return nil
    end
    error({err = 'REDFOUR_CORRUPT the lock hash has no index field'})
  end
  local stored = tonumber(raw)
  if stored == nil then
    error({err = 'REDFOUR_CORRUPT the lock hash has no numeric index field'})
  end
  return stored
end
