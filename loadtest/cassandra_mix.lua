-- wrk script: a fixed number of tracked requests of issue 17's mix, the
-- same requests on every run (fixed seed), for loadtest/bench_cassandra.py.
--
--   wrk -t1 -c64 -d60s -s loadtest/cassandra_mix.lua URL -- COUNT [SEED]
--
-- Each request is a page-view beacon without "first" (so every event is a
-- first event: visitors and sessions rows):
--   /tr/v1/ename/view/url/<one of 50 pages>/ref/<one of 20 referrers>
--        /lat/<f>/lon/<f>/score/<n>
-- 60 % of requests carry a `vid` cookie from a pool of 20,000 generated ids
-- (returning visitors), 40 % none (the collector mints a vid). User agents:
-- one of 40. The thread stops once COUNT answers have come back (a few
-- requests still in flight then may be answered too: count stored events,
-- not requests).

local count, answered = 20000, 0
local vids = {}
local pool = 20000

local function uuid4()
   local t = {}
   for i = 1, 16 do t[i] = math.random(0, 255) end
   t[7] = 0x40 + (t[7] % 16)
   t[9] = 0x80 + (t[9] % 64)
   local h = string.format(string.rep("%02x", 16), unpack(t))
   return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" ..
          h:sub(17, 20) .. "-" .. h:sub(21, 32)
end

function init(args)
   count = tonumber(args[1] or count)
   math.randomseed(tonumber(args[2] or 17))
   for i = 1, pool do vids[i] = uuid4() end
end

function request()
   local path = string.format(
      "/tr/v1/ename/view/url/https%%3A%%2F%%2Fshop.example%%2Fp%%2F%d/ref/r%d" ..
      "/lat/%.4f/lon/%.4f/score/%d",
      math.random(1, 50), math.random(1, 20),
      math.random() * 120 - 60, math.random() * 300 - 150, math.random(0, 9))
   local visitor = math.random(1, pool)
   local headers = {["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) bench/" .. (visitor % 40)}
   if math.random(1, 100) <= 60 then
      headers["Cookie"] = "vid=" .. vids[visitor]
   end
   return wrk.format("GET", path, headers)
end

function response(status, headers, body)
   answered = answered + 1
   if answered >= count then
      wrk.thread:stop()
   end
end
