-- wrk script: tracked requests at realistic cardinality (generated visitors).
--
--   wrk -s loadtest/visitors.lua URL -- [tracker|nginx] [new_percent] [TAG] [uids]
--
-- Every request is a tuplet GET like a browser's page-view beacon:
--   /tr/v1/ename/view/m/<marker>/uid/u<n>/url/<page>/ref/<referrer>/lat/<f>/lon/<f>/score/<n>
-- with one of 500 pages, 50 referrers, a uid per visitor, and a visitor that is
-- new (no cookie: the collector mints a vid) in `new_percent` % of requests
-- (default 40) or returning (a `vid` cookie from a pool of 20,000 generated
-- ids). "nginx" sends the same generated path to /pixel.gif?... so the load
-- generator does the same work per request for both servers. Each request has
-- a unique marker m = <TAG>.<thread>-<n>, so a runner can count stored events.
-- `uids` = "own" gives every request a uid of its own (u<TAG>.<thread>-<n>)
-- instead of the visitor's: with new_percent 100, every request is a new
-- visitor with its own uid (loadtest/bench_store.py's realistic mix).

local counter = 0
local thread_id = 0
local target = "tracker"
local new_percent = 40
local tag = "V"
local own_uids = false
local vids = {}
local pool = 20000

local threads_seen = 0
function setup(thread)
   threads_seen = threads_seen + 1
   thread:set("tid", threads_seen)
end

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
   thread_id = tonumber(wrk.thread:get("tid")) or 0
   math.randomseed(os.time() * 1000 + thread_id)
   target = args[1] or target
   new_percent = tonumber(args[2] or new_percent)
   tag = args[3] or tag
   own_uids = args[4] == "own"
   for i = 1, pool do vids[i] = uuid4() end
end

function request()
   counter = counter + 1
   local visitor = math.random(1, pool)
   local page = math.random(1, 500)
   local uid = own_uids and string.format("%s.%d-%d", tag, thread_id, counter) or visitor
   local path = string.format(
      "/ename/view/m/%s.%d-%d/uid/u%s/url/https%%3A%%2F%%2Fshop.example%%2Fp%%2F%d" ..
      "/ref/r%d/lat/%.4f/lon/%.4f/score/%d",
      tag, thread_id, counter, uid, page, math.random(1, 50),
      math.random() * 120 - 60, math.random() * 300 - 150, math.random(0, 9))
   local headers = {}
   for k, v in pairs(wrk.headers) do headers[k] = v end   -- wrk -H (Connection: close)
   if math.random(1, 100) > new_percent then
      headers["Cookie"] = "vid=" .. vids[visitor]
   end
   headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) bench/" .. (visitor % 40)
   if target == "nginx" then
      return wrk.format("GET", "/pixel.gif?p=" .. path, headers)
   end
   return wrk.format("GET", "/tr/v1" .. path, headers)
end
