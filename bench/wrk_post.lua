-- wrk script for bench/warm.py: POST a small JSON event, print a JSON summary at the end.
-- usage: wrk -t1 -c64 -d10s --latency -s bench/wrk_post.lua URL
wrk.method = "POST"
wrk.body = '{"name": "bench"}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("MIST_AUTHORIZATION")  -- set by bench/_common.py::run_wrk: mist's admin key
if auth then wrk.headers["Authorization"] = auth end

function done(summary, latency, requests)
  local s = summary
  io.write("WRK_JSON ")
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    s.requests, s.duration, s.bytes,
    s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
