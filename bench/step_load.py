"""Step load: 0 -> N concurrent clients on a 50 ms function, then back to zero.

A real `mist up` (default settings unless --mist-arg), one function whose handler sleeps 50 ms
(128 MB, concurrency 1, never invoked before: it starts at zero instances). At t=0, N clients
(default 100) start at once, each sending POST /v1/functions/step/invocations back to back on
its own keep-alive connection (a raw asyncio HTTP/1.1 client: the load generator must not eat
the CPU mist needs) for --duration seconds. /v1/statistics is polled every 25 ms meanwhile.

Reported:
- time until N instances serve (initialized instances of the function, from the statistics),
  target < 1 s; and until the autoscaler's desired count (ceil(N / 0.7) with the default
  target utilisation) is reached;
- latency p50/p99 during the ramp (requests that started before N instances served) and after;
- requests refused or failed (any answer but 200), target 0;
- after the clients stop: the keep-alive policy's decision for the idle period, and how long
  until the function is back at zero instances (waited for up to --drain seconds; pass
  --mist-arg=--keepalive=10 for a fixed 10 s keep-alive to see the whole way down quickly).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

from _common import MistServer, Report, arg_parser, auth_headers, client, deploy, statistics, summary

SLEEP_50MS = "import time\n\ndef handler(event, context):\n    time.sleep(0.05)\n    return 'ok'\n"


async def _client(host: str, port: int, stop_at: float, out: list[tuple[float, float, int]]) -> None:
    body = b'"x"'
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_headers(f"http://{host}:{port}").items())
    request = (f"POST /v1/functions/step/invocations HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out.append((t0, time.monotonic() - t0, status))
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        out.append((time.monotonic(), 0.0, -1))
        print(f"client connection failed: {exc!r}")
    finally:
        writer.close()


def _load(url: str, n: int, duration: float, start_at: float) -> list[tuple[float, float, int]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    out: list[tuple[float, float, int]] = []

    async def run() -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await asyncio.gather(*(_client(host, int(port), start_at + duration, out) for _ in range(n)))

    asyncio.run(run())
    return out


def _function_stats(stats: dict) -> dict:
    for f in stats["Worker"]["functions"]:
        if f["name"] == "step":
            return f
    return {"instances": 0, "initializing": 0, "busy": 0, "desired": 0, "in_flight": 0, "waiting": 0}


def main() -> None:
    ap = arg_parser(__doc__.split("\n")[0])
    ap.add_argument("-N", type=int, default=100, help="concurrent clients (default 100)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load (default 8)")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds to wait for zero instances (default 120)")
    args = ap.parse_args()
    rep = Report("step load")
    n = args.N

    with MistServer(args.mist_arg) as srv, client(srv.url) as c:
        deploy(c, "step", {"main.py": SLEEP_50MS})
        timeline: list[tuple[float, dict]] = []
        polling = True

        def poll() -> None:
            with client(srv.url) as pc:
                while polling:
                    timeline.append((time.monotonic(), _function_stats(statistics(pc))))
                    time.sleep(0.025)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        start_at = time.monotonic() + 0.5
        results = _load(srv.url, n, args.duration, start_at)
        stopped_at = time.monotonic()
        polling = False
        poller.join()

        serving = [t - start_at for t, f in timeline if t >= start_at and f["instances"] - f["initializing"] >= n]
        t_n = serving[0] if serving else math.inf
        want = math.ceil(n / 0.7)
        desired = [t - start_at for t, f in timeline if t >= start_at and f["instances"] >= want]
        t_desired = desired[0] if desired else math.inf
        peak = max((f["instances"] for _, f in timeline), default=0)
        ok = [(t0, lat) for t0, lat, status in results if status == 200]
        refused = sum(1 for _, _, status in results if status != 200)
        ramp = [lat * 1000 for t0, lat in ok if t0 - start_at < t_n]
        steady = [lat * 1000 for t0, lat in ok if t0 - start_at >= t_n]
        rate = len(ok) / args.duration

        # back to zero
        after = _function_stats(statistics(c))
        deadline = time.monotonic() + args.drain
        zero_at = math.inf
        decision = None
        while time.monotonic() < deadline:
            f = _function_stats(statistics(c))
            if f.get("keepalive_s") is not None:
                decision = (f.get("prewarm_delay_s"), f.get("keepalive_s"))
            if f["instances"] == 0:
                zero_at = time.monotonic() - stopped_at
                break
            time.sleep(0.25)

    rep.row(f"{n} clients, 50 ms function, {args.duration:.0f} s", f"{len(results):,} requests", f"{rate:,.0f} req/s "
            f"(ideal {n / 0.05:,.0f} req/s: {n} clients / 50 ms)")
    rep.row(f"time until {n} instances serve", f"{t_n:.3f} s", "target < 1 s")
    rep.row(f"time until the autoscaler's {want} (ceil({n}/0.7))", f"{t_desired:.3f} s", f"peak {peak} instances")
    if ramp:
        rep.row("latency during the ramp", f"p50 {summary(ramp)['p50']:.1f} / p99 {summary(ramp)['p99']:.1f} ms",
                f"{len(ramp)} requests")
    if steady:
        rep.row("latency after", f"p50 {summary(steady)['p50']:.1f} / p99 {summary(steady)['p99']:.1f} ms",
                "floor: the handler's 50 ms")
    rep.row("refused or failed", f"{refused}", "target 0")
    rep.row("instances when the load stopped", f"{after['instances']}", f"desired {after.get('desired')}")
    rep.row("keep-alive decision (prewarm delay, keep-alive s)", f"{decision}", "")
    rep.row("back to zero instances after", f"{zero_at:.1f} s", f"waited up to {args.drain:.0f} s")
    rep.check(f"time until {n} instances serve (s)", t_n, "< 1 s", t_n < 1.0)
    rep.check("requests refused", refused, "0", refused == 0)
    rep.data = {"timeline": [(round(t - start_at, 3), f) for t, f in timeline[::4]], "t_n": t_n,
                "zero_after_s": zero_at}
    rep.print(args.json)


if __name__ == "__main__":
    main()
