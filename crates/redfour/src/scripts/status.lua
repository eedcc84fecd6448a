-- redfour status: read-only view of one lock.
-- KEYS[1] lock key. Returns {type} for anything but a hash, {'hash', pttl, field, value, ...}.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' then
  return {kind}
end
local reply = {'hash', redis.call('PTTL', KEYS[1])}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields do
  reply[#reply + 1] = fields[i]
end
return reply
