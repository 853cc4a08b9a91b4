-- wrk script: decide (or event) requests spread over many guests, and a JSON summary on stdout.
-- Usage: wrk -t1 -c32 -d10s -s benchmarks/wrk_decide.lua http://127.0.0.1:PORT -- decide realistic 20000
--        wrk ... -- events - 20000        (one event per request)
--        wrk ... -- events - 20000 20     (batches: {"events": [20 events]} per request)
-- The guest ids match benchmarks/data.py guest_ref(); ~2 % of requests name an unknown browser, as in
-- benchmarks/data.py decide_bodies(). Seeded per thread, so runs send the same mix.
local channels = {"WEB", "APP", "STORE"}
local categories = {"shoes", "outerwear", "denim", "accessories", "knitwear", "sport", "kids", "home"}
local kinds = {"VIEW", "VIEW", "VIEW", "ADD", "SEARCH"}
local mode, model, guests, batch, path = "decide", "realistic", 20000, 1, nil
local counter, thread_id = 0, 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or mode
  model = args[2] or model
  guests = tonumber(args[3] or guests)
  batch = tonumber(args[4] or batch)
  math.randomseed(20261123 + (thread_id or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-API-Key"] = os.getenv("ARBITER_PUBLIC_KEY") or "demo-public"
  path = (mode == "events") and "/v1/events" or ("/v1/decide/" .. model)
end

local function guest()
  return string.format("bench-%07d", math.random(0, math.floor(guests * 1.02) - 1))
end

-- Refs are unique per run (thread, start time, counter): a repeated ref is a cheap duplicate, not an event.
local function event()
  counter = counter + 1
  return string.format(
    '{"ref":"wrk-%d-%d-%d","type":"%s","browser_id":"%s","channel":"%s","language":"EN","currency":"EUR",' ..
    '"page":"product","category":"%s","product":{"item_id":"SKU-%d","price":%.2f,"quantity":1}}',
    thread_id or 0, os.time(), counter, kinds[math.random(#kinds)], guest(),
    channels[math.random(#channels)], categories[math.random(#categories)], math.random(1, 500),
    5 + math.random() * 95)
end

function request()
  local body
  if mode == "events" and batch > 1 then
    local events = {}
    for i = 1, batch do events[i] = event() end
    body = '{"events":[' .. table.concat(events, ",") .. ']}'
  elseif mode == "events" then
    body = event()
  else
    body = string.format(
      '{"guest":{"browser_id":"%s"},"context":{"channel":"%s","page":"product","category":"%s","price":%.2f,"now":"2026-11-23"}}',
      guest(), channels[math.random(#channels)], categories[math.random(#categories)], 10 + math.random() * 90)
  end
  return wrk.format(nil, path, nil, body)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"p99.9_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), non2xx, errs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000))
end
