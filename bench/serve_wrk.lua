-- wrk script for `modex serve` load tests: POSTs one image file (MODEX_WRK_IMAGE, raw body with
-- MODEX_WRK_TYPE, default image/jpeg) to the URL given to wrk, and at the end prints one line
-- "MODEX_WRK_JSON {...}" with requests, errors by kind, non-2xx responses and latency
-- percentiles in microseconds, for bench/serve_load.py and tests/oracle/test_serve.py.
local path = os.getenv("MODEX_WRK_IMAGE")
local f = assert(io.open(path, "rb"), "cannot open MODEX_WRK_IMAGE " .. tostring(path))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("MODEX_WRK_TYPE") or "image/jpeg"

local threads = {}
local non2xx = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do
    bad_total = bad_total + (t:get("bad") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'MODEX_WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, bad_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
