-- wrk script for Skygate's benchmark: POST OpenAI-style chat completions.
--
-- Configured by environment variables (read once, when wrk loads the script):
--   BENCH_MODE   unique (default): every body differs (cache misses)
--                identical: one fixed body (cache hits after the first request)
--                stream: unique bodies with "stream": true
--   BENCH_KEY    bearer token sent as "Authorization: Bearer <key>" (optional)
--   BENCH_MODEL  model name (default gpt-4o-mini)
--   BENCH_NONCE  text mixed into unique bodies so that runs never share cache entries
--
-- done() prints one line "BENCH_JSON {...}" with the counters and the latency
-- percentiles (microseconds) for bench/run.py to parse. In identical mode a
-- response() hook also counts answers marked as cache hits (Skygate's
-- "x-cache: hit", LiteLLM's "x-litellm-cache-key"); it is left out in the other
-- modes so that wrk does not parse every response's headers into Lua tables.

local mode = os.getenv("BENCH_MODE") or "unique"
local key = os.getenv("BENCH_KEY") or ""
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local nonce = os.getenv("BENCH_NONCE") or "0"

local headers = { ["Content-Type"] = "application/json" }
if key ~= "" then
  headers["Authorization"] = "Bearer " .. key
end

local path = wrk.path
local stream_field = ""
if mode == "stream" then
  stream_field = ',"stream":true'
end

local function body_for(content)
  return '{"model":"' .. model .. '","messages":[{"role":"user","content":"' .. content .. '"}]'
    .. stream_field .. '}'
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

local fixed = nil
local counter = 0

function init(args)
  fixed = wrk.format("POST", path, headers, body_for("benchmark identical body, please answer"))
  hits = 0
end

if mode == "identical" then
  function request()
    return fixed
  end

  function response(status, resp_headers, body)
    if resp_headers["x-cache"] == "hit" or resp_headers["x-litellm-cache-key"] ~= nil then
      hits = hits + 1
    end
  end
else
  function request()
    counter = counter + 1
    local content = "benchmark " .. nonce .. " thread " .. id .. " request " .. counter
    return wrk.format("POST", path, headers, body_for(content))
  end
end

function done(summary, latency, requests)
  local total_hits = 0
  for _, thread in ipairs(threads) do
    total_hits = total_hits + (thread:get("hits") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"cache_hits":%d,"counted_hits":%s,' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    total_hits, mode == "identical" and "true" or "false",
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
