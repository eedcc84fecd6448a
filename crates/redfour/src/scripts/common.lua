-- Shared functions of every redfour script (prepended to each of them).
-- Errors are raised as {err = 'CODE message'}: REDFOUR_WRONGTYPE for a key holding another
-- type, REDFOUR_CORRUPT for unusable contents; the same codes with _COUNTER when the key is the
-- fencing counter rather than the lock. Foreign data is never written over.

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

-- Whether `raw` is a stored index in the one form this library accepts (`parse_index` in
-- lock.rs is the same grammar): a decimal integer from 1 to 2^53-1 (so that JavaScript reads it
-- exactly), without sign, leading zeros, blanks, fraction or exponent. It is what this library
-- writes, and what Node redfour writes too (an INCR result through a Lua number, which Redis
-- formats with %.17g: plain digits below 1e17). Being canonical, an index compares as a string,
-- which a Lua number (a double) could not do exactly for every value.
local function redfour_is_index(raw)
  return string.len(raw) <= 16 and string.find(raw, '^[1-9]%d*$') ~= nil
    and tonumber(raw) <= 9007199254740991
end

-- The lock at `key`: -2 when there is none; otherwise its remaining ttl and its index (as
-- stored, in the form `redfour_is_index` accepts). Anything else is foreign or corrupt data,
-- refused with the same verdict by every script and by `status`: a key of another type, a hash
-- without a valid index, a hash without expiry (it would never go away). The checks run in
-- the order `parse_status` in lock.rs uses, so that both name the same fault.
local function redfour_lock(key)
  local pttl = redis.call('PTTL', key)
  if pttl == -2 then
    return -2, nil
  end
  local raw = redis.pcall('HGET', key, 'index')
  if type(raw) == 'table' then
    redfour_unless_wrongtype(raw)
    error({err = 'REDFOUR_WRONGTYPE the lock key holds a '
      .. redis.call('TYPE', key)['ok'] .. ', not a hash'})
  end
  if not raw then
    error({err = 'REDFOUR_CORRUPT the lock hash has no index field'})
  end
  if not redfour_is_index(raw) then
    error({err = 'REDFOUR_CORRUPT the lock hash has an index that is not an integer from 1 to 2^53-1'})
  end
  if pttl < 0 then
    error({err = 'REDFOUR_CORRUPT the lock hash has no expiry'})
  end
  return pttl, raw
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
  if counter == key .. ':index' then
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
