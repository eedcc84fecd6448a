-- Reading a lock: shared functions of every redfour script that reads one (prepended to it).
-- Errors are raised as {err = 'CODE message'}: REDFOUR_WRONGTYPE for a key holding another
-- type, REDFOUR_CORRUPT for unusable contents; the same codes with _COUNTER when the key is the
-- fencing counter rather than the lock. Foreign data is never written over.
-- A script carries only the functions it uses: the server defines every one of them again on
-- each call, which costs time on its one thread (see BENCHMARKS.md, "Where the server time
-- goes"). Granting a lock, with the fencing counter, is in grant.lua.

-- Raises a failed `redis.pcall`'s error as it is unless it says the key holds another type:
-- a refused command (an ACL without it, OOM) is not foreign data.
local function redfour_unless_wrongtype(reply)
  if string.sub(reply.err, 1, 9) ~= 'WRONGTYPE' then
    error(reply)
  end
end

-- Whether `raw` is a stored index in the one form this library accepts (`parse_index` in
-- outcome.rs is the same grammar): a decimal integer from 1 to 2^53-1 (so that JavaScript reads it
-- exactly), without sign, leading zeros, blanks, fraction or exponent. It is what this library
-- writes, and what Node redfour writes too (an INCR result through a Lua number, which Redis
-- formats with %.17g: plain digits below 1e17). Being canonical, an index compares as a string,
-- which a Lua number (a double) could not do exactly for every value.
local function redfour_is_index(raw)
  return string.len(raw) <= 16 and string.find(raw, '^[1-9]%d*$') ~= nil
    and tonumber(raw) <= 9007199254740991
end

-- The lock at `key` as read by `PTTL` (`pttl`) and a `redis.pcall` of `HGET key index`
-- (`raw`, not read when `pttl` is -2): -2 when there is none; otherwise its remaining ttl and
-- its index (as stored, in the form `redfour_is_index` accepts). Anything else is foreign or
-- corrupt data, refused with the same verdict by every script and by `status`: a key of
-- another type, a hash without a valid index, a hash without expiry (it would never go away).
-- The checks run in the order `parse_status` in outcome.rs uses, so that both name the same
-- fault.
local function redfour_judge(key, pttl, raw)
  if pttl == -2 then
    return -2, nil
  end
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

-- The lock at `key`, read and judged (see `redfour_judge`).
local function redfour_lock(key)
  local pttl = redis.call('PTTL', key)
  if pttl == -2 then
    return -2, nil
  end
  return redfour_judge(key, pttl, redis.pcall('HGET', key, 'index'))
end
