-- Notices go out with PUBLISH (a single Redis, Sentinel, Redlock's masters).
local function redfour_publish(channel, message)
  redis.call('PUBLISH', channel, message)
end
