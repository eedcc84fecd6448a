-- Granting a lock: the fencing index and the new holder's hash (prepended, after lock.lua, to
-- the scripts that grant). Errors as in lock.lua.

local function redfour_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- How long a per-lock counter (the cluster layout's `{ns:id}:index`) lives after the last index
-- taken from it: one hour. Every index is floored at the server clock, so a counter that expires
-- loses nothing as long as that clock does not step back (or, after a failover, the next
-- master's clock is not behind) by more than this; and every lock id ever used no longer leaves
-- a key forever. Node redfour's one shared counter `{ns}index` is its wire format and never
-- expires: the layout is told by the name, a per-lock counter being exactly the lock key plus
-- `:index` (`Namespace::counter` in keys.rs), which a Node counter never is.
local REDFOUR_COUNTER_LIFE_MS = 3600000

-- The counter plus one, floored at `now_us` (see `redfour_next_index`).
local function redfour_counter_next(counter, now_us)
  local now = string.format('%d', now_us)
  local raw = redis.pcall('SET', counter, now, 'KEEPTTL', 'GET')
  if type(raw) == 'table' and raw.err then
    redfour_unless_wrongtype(raw)
    error({err = 'REDFOUR_WRONGTYPE_COUNTER the counter key holds a '
      .. redis.call('TYPE', counter)['ok'] .. ', not a string'})
  end
  if not raw then
    return now_us
  end
  -- Digits of any length are an integer, however large (tonumber gives inf past 1e308): a
  -- counter beyond 2^53-1 is reported as such, not as "not an integer".
  local current = nil
  if string.find(raw, '^%-?%d+$') then
    current = tonumber(raw)
  end
  if current == nil or current >= 9007199254740991 then
    redis.call('SET', counter, raw, 'KEEPTTL')
    if current == nil then
      error({err = 'REDFOUR_CORRUPT_COUNTER the counter is not an integer'})
    end
    error({err = 'REDFOUR_CORRUPT_COUNTER the counter is at or beyond 2^53-1, the largest index JavaScript reads exactly'})
  end
  if current < now_us then
    return now_us
  end
  redis.call('SET', counter, string.format('%d', current + 1), 'KEEPTTL')
  return current + 1
end

-- The next fencing index for the lock `key`: the counter plus one, floored at the server clock
-- in microseconds. One call in the usual case: the counter is behind the clock, so the clock is
-- the index and is written while the old value is read (`SET ... GET`). Foreign contents are put
-- back as they were (value and expiry) before the error is raised, all inside this atomic
-- script, so that nobody ever sees them changed; a key of another type is refused by Redis
-- before any write. A per-lock counter gets (back) its expiry with every index taken from it.
local function redfour_next_index(key, counter, now_us)
  local index = redfour_counter_next(counter, now_us)
  -- The lengths first: building the string costs more than the call it saves in the Node
  -- layout, whose counter is never 6 bytes longer than a lock key of its namespace.
  if #counter == #key + 6 and counter == key .. ':index' then
    redis.call('PEXPIRE', counter, REDFOUR_COUNTER_LIFE_MS)
  end
  return index
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
  local index = redfour_next_index(key, counter, now_us)
  redfour_write_holder(key, index, now_us, ttl, meta, first, token)
  return index
end
