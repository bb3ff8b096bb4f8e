-- Three pipelined requests per round (one a 404), until each connection
-- has read `limit` responses; then wrk's thread stops.
local limit = 150
local rounds = {}
local counts = {}

init = function(args)
  local r = {
    wrk.format("GET", "/index.html"),
    wrk.format("GET", "/missing"),
    wrk.format("GET", "/users/42"),
  }
  pipelined = table.concat(r)
end

request = function()
  return pipelined
end

response = function(status, headers, body)
  responses = (responses or 0) + 1
  if responses >= limit then
    wrk.thread:stop()
  end
end
