-- Notices go out with PUBLISH (a single Redis, Sentinel, Redlock's masters).
local function redfour_publish(channel, message)
  redis.call('PUBLISH', channel, message)
end
-- Clients that wait without the fair queue (Node redfour's) listen on this layout's one release
-- channel (see "Outsiders' turns" in fair_common.lua).
local redfour_outsiders_listen = true
