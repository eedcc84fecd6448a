-- redfour fair release, the usual handover next: the caller holds the lock, the queue's first
-- waiter (`head`, read by fair_release_alone.lua) has a live, well-formed entry, and the
-- counter holds an index this library took from the server clock (or nothing), and no
-- outsider listens on the release channel (see "Outsiders' turns" in fair_common.lua: with
-- them about, the general path decides whose turn it is). Written out
-- before the shared functions are defined, as fair_release_alone.lua is: the general path
-- (`redfour_live_head`, `redfour_next_index`, `redfour_handoff`) costs a quarter more for the
-- same calls (see BENCHMARKS.md, "Issue 12, second part"). It does what those functions do for
-- this case, call for call. In every other case (a dead or malformed entry, an unusual
-- counter) nothing is left written (a counter read by the `SET ... GET` is put back as it was,
-- value and expiry) and fair_release.lua decides, with `pttl`, `raw` and `head` as
-- fair_release_alone.lua left them. The entry's checks are `redfour_usable_entry`'s in
-- fair_common.lua; a unit test in scripts.rs holds the two lists of reserved fields equal.
local outsiders = 0
if head and redfour_outsiders_listen then
  -- As `redfour_outsiders` in fair_common.lua counts them (0 when the ACL refuses).
  local numsub = redis.pcall('PUBSUB', 'NUMSUB', ARGV[2])
  if type(numsub) == 'table' and not numsub.err and type(numsub[2]) == 'number' then
    outsiders = numsub[2]
  end
end
if head and outsiders == 0 then
  local raw_entry = redis.call('HGET', KEYS[4], head)
  local ok, entry = false, nil
  if raw_entry then
    ok, entry = pcall(cjson.decode, raw_entry)
  end
  local clock = redis.call('TIME')
  local now_us = clock[1] * 1000000 + clock[2]
  local usable = ok and type(entry) == 'table'
  local e, t, c, m
  if usable then
    e, t, c, m = tonumber(entry.e), tonumber(entry.t), entry.c, entry.m
    usable = e and e > math.floor(now_us / 1000) and t and t >= 1 and t == math.floor(t)
      and t <= 9007199254740991 and type(c) == 'string' and c ~= ''
  end
  if usable then
    if m == nil then
      m = {}
    elseif type(m) ~= 'table' or #m % 2 ~= 0 then
      usable = false
    else
      local reserved = {index = true, acquired_at = true, handoff = true, attempt = true, fair = true}
      for i = 1, #m do
        if type(m[i]) ~= 'string' or (i % 2 == 1 and reserved[m[i]]) then
          usable = false
          break
        end
      end
    end
  end
  if usable then
    local now = string.format('%d', now_us)
    local old = redis.pcall('SET', KEYS[2], now, 'KEEPTTL', 'GET')
    -- An index behind the clock, in the only form this library writes (as in
    -- fair_acquire_free.lua).
    local usual = not old
    if type(old) == 'string' then
      usual = #old == #now and old < now and string.find(old, '^[1-9]%d*$') ~= nil
      if not usual then
        redis.call('SET', KEYS[2], old, 'KEEPTTL')
      end
    end
    if usual then
      -- A per-lock counter lives an hour after its last index (grant.lua).
      if #KEYS[2] == #KEYS[1] + 6 and KEYS[2] == KEYS[1] .. ':index' then
        redis.call('PEXPIRE', KEYS[2], 3600000)
      end
      redis.call('LPOP', KEYS[3])
      redis.call('HDEL', KEYS[4], head)
      local window = math.min(t, tonumber(ARGV[3]))
      redis.call('HDEL', KEYS[1], 'attempt', 'handoff', 'host', 'pid', 'description')
      redis.call('HSET', KEYS[1], 'index', now,
        'acquired_at', string.format('%d', math.floor(now_us / 1000)), 'handoff', head, unpack(m))
      redis.call('PEXPIRE', KEYS[1], window)
      redfour_publish(c, head .. ' ' .. now .. ' ' .. window .. ' ' .. KEYS[1])
      return {1, 'released', tonumber(raw)}
    end
  end
end
