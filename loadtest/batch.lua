-- wrk script: POST /tr/v1/batch with a JSON array of N generated events.
--
--   wrk -s loadtest/batch.lua URL -- N [TAG]
--
-- Each element is a page view of a generated visitor (one of 20,000 vids, a
-- uid, one of 500 pages, one of 50 referrers) with a unique marker m, so a
-- runner can count stored events. N = 1 posts a one-element array.

local counter = 0
local thread_id = 0
local per = 10
local tag = "B"
local vids = {}

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
   per = tonumber(args[1] or per)
   tag = args[2] or tag
   for i = 1, 20000 do vids[i] = uuid4() end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local items = {}
   for i = 1, per do
      counter = counter + 1
      local visitor = math.random(1, 20000)
      items[i] = string.format(
         '{"ename":"view","m":"%s.%d-%d","vid":"%s","uid":"u%d",' ..
         '"url":"https://shop.example/p/%d","ref":"r%d","score":%d}',
         tag, thread_id, counter, vids[visitor], visitor, math.random(1, 500),
         math.random(1, 50), math.random(0, 9))
   end
   return wrk.format(nil, "/tr/v1/batch", nil, "[" .. table.concat(items, ",") .. "]")
end
