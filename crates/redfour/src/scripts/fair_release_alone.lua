-- redfour fair release, the usual case first: the caller holds the lock and nobody queues. It
-- comes first in the script (after the notice prelude), written out without the shared
-- functions, which the server would otherwise define again on this call too (see
-- fair_acquire_free.lua). The caller's index is canonical (the client sends only indexes it
-- checked or read in the one form the scripts write: `check_index`, `parse_index`), so a
-- stored index equal to it is one too. In every other case (a waiter queued, outsiders'
-- turn state, another holder, a waiter's token in ARGV[4], foreign data) nothing has been written, and
-- fair_release.lua goes on with what was read here: the lock's `pttl`, the `raw` reply of
-- its `HGET index`, and the queue's `head` when it was read. KEYS and ARGV as in
-- fair_release.lua.
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then
  return {1, 'expired', -1}
end
local raw = redis.pcall('HGET', KEYS[1], 'index')
local head = nil
if pttl >= 0 and raw == ARGV[1] and not ARGV[4] then
  -- Neither queue key: nobody queues, and there is no outsiders' turn state (see
  -- fair_common.lua), with which fair_release.lua decides. One call, as the LINDEX it saves.
  local alone = redis.call('EXISTS', KEYS[3], KEYS[4]) == 0
  if not alone then
    head = redis.call('LINDEX', KEYS[3], 0)
    alone = not head
      and (not redfour_outsiders_listen or redis.pcall('HEXISTS', KEYS[4], 'turn') ~= 1)
  end
  if alone then
    redis.call('DEL', KEYS[1])
    -- Nobody queues (Node waiters never do): wake everyone listening, as Node redfour does.
    redfour_publish(ARGV[2], KEYS[1])
    return {1, 'released', tonumber(raw)}
  end
end
