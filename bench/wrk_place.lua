-- wrk script for bench/cluster_roles.py: POST one invocation order (mist/cluster/wire.py) to a
-- scheduler's cluster API (/v1/cluster/place), as a gateway forwards it. The JSON summary at the
-- end is wrk_post.lua's (loaded from this script's directory).
-- usage: MIST_ORDER_FILE=order.bin MIST_CLUSTER_TOKEN=... wrk -t1 -c4 -d8s -s bench/wrk_place.lua URL
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_post.lua")
local f = assert(io.open(os.getenv("MIST_ORDER_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MIST_CLUSTER_TOKEN")
