-- wrk script for bench/cluster_roles.py: POST one invocation order (mist/cluster/wire.py) to a
-- scheduler's cluster API (/v1/cluster/place), as a gateway forwards it; print a JSON summary.
-- usage: MIST_ORDER_FILE=order.bin MIST_CLUSTER_TOKEN=... wrk -t1 -c4 -d8s -s bench/wrk_place.lua URL
wrk.method = "POST"
local f = assert(io.open(os.getenv("MIST_ORDER_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MIST_CLUSTER_TOKEN")

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
