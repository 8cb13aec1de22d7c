-- wrk script: a mix of the collector's tracked routes, or the static ceiling.
--
--   wrk -s loadtest/mixed.lua URL -- mixed [tuplet=40,post=25,pixel=25,redirect=8,bad=2] [TAG]
--   wrk -s loadtest/mixed.lua URL -- ceiling - [TAG]
--
-- mixed:   tuplet GETs /tr/v1/..., JSON POSTs to /tr/v1/ with the Go collector's
--          field set, pixel GETs /img/v1/..., redirects /rdr/v1/...?redirect= to an
--          allowed host (example.com) and malformed JSON POSTs (answered 400, not
--          stored). Weights are relative integers.
-- ceiling: GET /pixel.gif?m=MARKER, the fixed location nginx serves the same 1x1
--          GIF from; generated here too, so the client does the same work per
--          request for both servers.
--
-- Every request carries a unique marker (`m`: "<TAG>.<thread>-<n>"; give each wrk
-- run its own TAG), so the runner can check that no event is stored twice. Returning visitors send a `vid` cookie
-- from a per-thread pool; about one request in ten comes from a new visitor (no
-- cookie, no vid: the collector makes one). Headers given with -H (for example
-- "Connection: close") are sent on every request.

local counter = 0
local thread_id = 0
local mode = "mixed"
local tag = "W"
local kinds = {}
local total_weight = 0
local vids = {}
local sids = {}

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
   mode = args[1] or "mixed"
   local spec = args[2]
   if spec == nil or spec == "-" then spec = "tuplet=40,post=25,pixel=25,redirect=8,bad=2" end
   tag = args[3] or tag
   for name, weight in spec:gmatch("(%w+)=(%d+)") do
      weight = tonumber(weight)
      if weight > 0 then
         total_weight = total_weight + weight
         kinds[#kinds + 1] = {name, total_weight}
      end
   end
   for i = 1, 500 do
      vids[i] = uuid4()
      sids[i] = uuid4()
   end
end

local function headers(extra)
   local h = {}
   for k, v in pairs(wrk.headers) do h[k] = v end
   h["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) tracker-loadtest"
   for k, v in pairs(extra) do h[k] = v end
   return h
end

local function pick()
   local r = math.random(1, total_weight)
   for _, kind in ipairs(kinds) do
      if r <= kind[2] then return kind[1] end
   end
   return kinds[#kinds][1]
end

local POST_BODY = '{"last":"https://localhost:5001/cw.html","next":"https://localhost:5001/cw.html",' ..
   '"params":{"type":"a","ref":"Bespoke","m":"%s"},"created":%d,"duration":%d,%s' ..
   '"first":"false","sid":"%s","tz":"America/Los_Angeles","device":"Linux","os":"Linux",' ..
   '"sink":"cw$","score":1,"eid":"cw-a","uid":"admin"}'

function request()
   counter = counter + 1
   local marker = tag .. "." .. thread_id .. "-" .. counter
   if mode == "ceiling" then
      return wrk.format("GET", "/pixel.gif?m=" .. marker, headers({}))
   end
   local slot = math.random(1, #vids)
   local returning = math.random(1, 10) > 1
   local extra = {}
   if returning then extra["Cookie"] = "vid=" .. vids[slot] end
   local kind = pick()
   if kind == "tuplet" then
      return wrk.format("GET", "/tr/v1/m/" .. marker .. "/ename/view/url/%2Fpage%2F" ..
                        (counter % 50) .. "/lat/37.23/lon/6.32/score/6/ref/andy", headers(extra))
   elseif kind == "pixel" then
      return wrk.format("GET", "/img/v1/m/" .. marker .. "/etyp/open/xid/mail" .. (counter % 7),
                        headers(extra))
   elseif kind == "redirect" then
      return wrk.format("GET", "/rdr/v1/m/" .. marker ..
                        "/ename/click?redirect=https%3A%2F%2Fexample.com%2Flanding", headers(extra))
   elseif kind == "post" then
      extra["Content-Type"] = "application/json"
      local vid = returning and ('"vid":"' .. vids[slot] .. '",') or ""
      local body = string.format(POST_BODY, marker, 1539102052702 + counter,
                                 math.random(1, 60000), vid, sids[slot])
      return wrk.format("POST", "/tr/v1/", headers(extra), body)
   else -- bad: malformed JSON, answered 400 and not stored
      extra["Content-Type"] = "application/json"
      return wrk.format("POST", "/tr/v1/", headers(extra), '{"m":"' .. marker .. '","vid":')
   end
end
