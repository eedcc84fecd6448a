-- Shared functions of every redfour script (prepended to each of them).
-- Errors are raised as {err = 'CODE message'}: REDFOUR_WRONGTYPE for a key holding another
-- type, REDFOUR_CORRUPT for unusable contents. Foreign data is never written over.

-- Raises a failed `redis.pcall`'s error as it is unless it says the key holds another type:
-- a refused command (an ACL without it, OOM) is not foreign data.
local function redfour_unless_wrongtype(reply)
  if string.sub(reply.err, 1, 9) ~= 'WRONGTYPE' then
    error(reply)
  end
end

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
-- One call in the usual case: the counter is behind the clock, so the clock is the index and is
-- written while the old value is read (`SET ... GET`). Foreign contents are put back as they
-- were (value and expiry) before the error is raised, all inside this atomic script, so that
-- nobody ever sees them changed; a key of another type is refused by Redis before any write.
local function redfour_next_index(counter, now_us)
  local now = string.format('%d', now_us)
  local raw = redis.pcall('SET', counter, now, 'KEEPTTL', 'GET')
  if type(raw) == 'table' and raw.err then
    redfour_unless_wrongtype(raw)
    error({err = 'REDFOUR_WRONGTYPE the counter key holds a '
      .. redis.call('TYPE', counter)['ok'] .. ', not a string'})
  end
  if not raw then
    return now_us
  end
  local current = nil
  if string.len(raw) <= 17 and string.match(raw, '^%-?%d+$') then
    current = tonumber(raw)
  end
  if current == nil or current >= 9007199254740991 then
    redis.call('SET', counter, raw, 'KEEPTTL')
    if current == nil then
      error({err = 'REDFOUR_CORRUPT the counter is not an integer'})
    end
    error({err = 'REDFOUR_CORRUPT the counter is at or beyond 2^53-1'})
  end
  if current < now_us then
    return now_us
  end
  redis.call('SET', counter, string.format('%d', current + 1), 'KEEPTTL')
  return current + 1
end

-- Writes the lock hash of a new holder with `index` (the key is known to be free). The holder
-- metadata are the field, value pairs of `meta` from position `first` on (ARGV itself, or a
-- queue entry's list), so that nothing is copied on the way.
local function redfour_write_holder(key, index, now_us, ttl, meta, first, token)
  local idx = string.format('%d', index)
  local at = string.format('%d', math.floor(now_us / 1000))
  if token then
    redis.call('HSET', key, 'index', idx, 'acquired_at', at, 'handoff', token, unpack(meta, first))
  else
    redis.call('HSET', key, 'index', idx, 'acquired_at', at, unpack(meta, first))
  end
  redis.call('PEXPIRE', key, ttl)
end

-- Takes the next index and writes the lock for a new holder (the key is known to be free).
local function redfour_grant(key, counter, now_us, ttl, meta, first, token)
  local index = redfour_next_index(counter, now_us)
  redfour_write_holder(key, index, now_us, ttl, meta, first, token)
  return index
end

-- The index of the lock's holder, or nil when there is no lock; errors on foreign data.
local function redfour_held_index(key)
  local raw = redis.pcall('HGET', key, 'index')
  if type(raw) == 'table' then
    redfour_unless_wrongtype(raw)
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
