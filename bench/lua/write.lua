-- wrk script for the write path (issue 18 part 2): POST /call with the API-key header, one body per
-- request. OP=insert: db/users/insert of a new row whose id is unique per request (ID_PREFIX, set per
-- wrk run by the bench, + wrk thread + counter). OP=update: db/users/update of one of the 1,000 seeded
-- rows by id (u_000001 … u_001000, in turn), setting its name.
-- Prints the same final RESULT {json} line as the yardsticks' call.lua.
wrk.method = "POST"
wrk.path   = "/call"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-santokit-api-key"] = os.getenv("API_KEY") or "stk_k42_secret42xxxxxxxxxxxxxxxx"
local op = os.getenv("OP") or "insert"
local prefix = os.getenv("ID_PREFIX") or "w"

local nthreads = 0
setup = function(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end

local n = 0
request = function()
  n = n + 1
  local body
  if op == "insert" then
    local id = string.format("%s_%d_%d", prefix, tid or 0, n)
    body = string.format('{"path":"db/users/insert","params":{"data":{"id":"%s","email":"%s@example.com","name":"W %d"}}}', id, id, n)
  else
    local row = ((n * 7 + (tid or 0) * 499) % 1000) + 1
    body = string.format('{"path":"db/users/update","params":{"where":{"id":"u_%06d"},"data":{"name":"Name %d"}}}', row, n)
  end
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    'RESULT {"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"requests":%d,"errors_socket":%d,"non2xx":%d}\n',
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
