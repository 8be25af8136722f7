-- wrk script for bench/lib/reject.ts: POST /call like the yardsticks' call.lua, but each request
-- takes the next key of API_KEYS (space-separated) and its own client address in X-Forwarded-For
-- (10.<thread>.<n>.<n>: 65,536 addresses per thread, as from a proxy in front of many clients; the
-- Bridge runs with STK_TRUST_PROXY=127.0.0.1). Counts the answers by status.
-- Prints one machine-readable line at the end:  RESULT {"rps":..,"requests":..,"status":{...}}
wrk.method = "POST"
wrk.path   = "/call"
wrk.body   = '{"path":"db/users/select","params":{"limit":1}}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local keys = {}
for k in string.gmatch(os.getenv("API_KEYS") or "", "%S+") do keys[#keys + 1] = k end
local n = 0
s200, s401, s429, sother = 0, 0, 0, 0

request = function()
  n = n + 1
  wrk.headers["x-santokit-api-key"] = keys[(n % #keys) + 1]
  wrk.headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", tid or 0, math.floor(n / 256) % 256, n % 256)
  return wrk.format()
end

response = function(status)
  if status == 200 then s200 = s200 + 1
  elseif status == 401 then s401 = s401 + 1
  elseif status == 429 then s429 = s429 + 1
  else sother = sother + 1 end
end

done = function(summary, latency, requests)
  local a, b, c, d = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("s200"); b = b + t:get("s401"); c = c + t:get("s429"); d = d + t:get("sother")
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    'RESULT {"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"requests":%d,"errors_socket":%d,"non2xx":%d,"status":{"200":%d,"401":%d,"429":%d,"other":%d}}\n',
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status,
    a, b, c, d))
end
