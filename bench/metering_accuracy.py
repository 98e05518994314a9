"""Metering accuracy: the duration mist meters for each attempt vs. the handler's own measured wall
time, for synchronous invocations and asynchronous attempts, in one run.

    /work/main/.venv/bin/python bench/metering_accuracy.py [-n 1000] [--events 300] [--clients 4]

One `mist up` (own data dir, free port) and the same handler deployed twice, 256 MB: `timed`
with concurrency 1 (one invocation per instance, as on Lambda) and `shared` with concurrency 4
(four invocations share one instance's interpreter). The handler reads `perf_counter()` as its
first statement and again as its last, and returns the difference as `wall_ms` after sleeping or
spinning (busy CPU) for a drawn time: 0, sub-millisecond, 1-20 ms or 20-200 ms. Cold starts are
included (a new version every 200 calls).

  1. sync: N invocations of each from `--clients` threads at once; per answer, `wall_ms` from the
     body and the attempt's usage record (`GET /v1/usage/records/{X-Mist-Invocation-Id}`);
  2. async: E events of each (`on_success` queue); each success's destination record carries the
     handler's `wall_ms` (`responsePayload`) and the event id; its usage record is `{id}-1`.

Figures: metered `duration_ms` minus the handler's `wall_ms` (p50 / p99 / max of the absolute
difference), and `billed_ms` minus `wall_ms` (billing rounds init + execution up to the ms).
Target: p99 of |metered - handler| <= 1 ms at concurrency 1. At concurrency 4 a spinning handler
holds the GIL for up to the 5 ms switch interval, so another invocation of the same instance can
wait that long between the runtime's clock reading and its handler's first statement (or after
its last): shown, not a target (the instance was busy for the caller all that time).
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import time

from _common import MistServer, Report, arg_parser, client, deploy, invoke, patch, summary

TIMED = """
import time
def handler(event, context):
    t0 = time.perf_counter()
    ms = event["ms"]
    if event["spin"]:
        while (time.perf_counter() - t0) * 1000 < ms:
            pass
    elif ms:
        time.sleep(ms / 1000)
    return {"wall_ms": (time.perf_counter() - t0) * 1000}
"""


def draw(rng: random.Random) -> dict:
    ms = rng.choice([0.0, rng.uniform(0.05, 1.0), rng.uniform(1, 20), rng.uniform(20, 200)])
    return {"ms": ms, "spin": rng.random() < 0.3}


def sync_samples(url: str, name: str, n: int, clients: int, seed: int) -> list[tuple[str, float, bool]]:
    """(invocation id, handler wall ms, cold start) of n invocations from `clients` threads."""

    def worker(k: int) -> list[tuple[str, float, bool]]:
        rng = random.Random(seed + k)
        out = []
        with client(url) as c:
            for i in range(k, n, clients):
                if i and i % 200 == 0 and k == 0:
                    patch(c, name, {"env": {"ROUND": str(i)}})  # a new version: cold starts again
                r = invoke(c, name, draw(rng))
                assert r.status_code == 200, r.text
                out.append((r.headers["x-mist-invocation-id"], r.json()["wall_ms"],
                            r.headers["x-mist-cold-start"] == "true"))  # fmt: skip
        return out

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return [s for part in pool.map(worker, range(clients)) for s in part]


def async_samples(url: str, name: str, events: int, seed: int) -> list[tuple[str, float, bool]]:
    rng = random.Random(seed)
    with client(url) as c:
        for _ in range(events):
            r = c.post(f"/v1/functions/{name}/invocations", json=draw(rng), headers={"X-Mist-Invocation-Type": "Event"})
            assert r.status_code == 202, r.text
        out: list[tuple[str, float, bool]] = []
        deadline = time.monotonic() + 300
        while len(out) < events and time.monotonic() < deadline:
            got = c.post(f"/v1/queues/{name}-timings/receive", params={"max": 100}).json()["messages"]
            for m in got:
                record = m["body"]
                out.append((f"{record['requestContext']['requestId']}-1", record["responsePayload"]["wall_ms"], False))
                c.delete(f"/v1/queues/{name}-timings/messages/{m['id']}")
            if not got:
                time.sleep(0.05)
        return out


def metered(url: str, samples: list[tuple[str, float, bool]]) -> list[tuple[dict, float, bool]]:
    with client(url) as c:
        return [(c.get(f"/v1/usage/records/{rid}").json(), wall, cold) for rid, wall, cold in samples]


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=1000, help="synchronous invocations (default 1000)")
    p.add_argument("--events", type=int, default=300, help="asynchronous invocations (default 300)")
    p.add_argument("--clients", type=int, default=4, help="concurrent synchronous clients (default 4)")
    p.add_argument("--seed", type=int, default=6)
    args = p.parse_args()
    report = Report("metering accuracy: metered duration vs the handler's own wall time")
    runs: dict[str, list[tuple[dict, float, bool]]] = {}
    with MistServer(["--s3-port", "0", *args.mist_arg]) as server, client(server.url) as c:
        for name, concurrency in (("timed", 1), ("shared", 4)):
            deploy(c, name, {"main.py": TIMED}, {"concurrency": concurrency, "memory_mb": 256,
                                                 "on_success": f"queue:{name}-timings"})  # fmt: skip
            runs[f"sync, concurrency {concurrency}"] = metered(
                server.url, sync_samples(server.url, name, args.n, args.clients, args.seed))
            runs[f"async, concurrency {concurrency}"] = metered(
                server.url, async_samples(server.url, name, args.events, args.seed))

    for label, rows in runs.items():
        diff = [abs(rec["duration_ms"] - wall) for rec, wall, _ in rows]
        over = [rec["billed_ms"] - wall for rec, wall, _ in rows]
        cold = [abs(rec["duration_ms"] - wall) for rec, wall, c in rows if c]
        s, b = summary(diff), summary(over)
        report.row(f"{label}: |metered duration - handler wall time| (n={len(rows)})",
                   f"p50 {s['p50']:.3f} / p99 {s['p99']:.3f} ms", f"max {s['max']:.3f} ms"
                   + (f"; cold starts (n={len(cold)}) max {max(cold):.3f} ms" if cold else ""))  # fmt: skip
        report.row(f"{label}: billed ms - handler wall time", f"p50 {b['p50']:.3f} / p99 {b['p99']:.3f} ms",
                   f"min {b['min']:.3f} / max {b['max']:.3f} ms (init + execution rounded up to the ms)")
        target = label.endswith("concurrency 1")
        report.check(f"{label}: metered vs handler p99 ms", s["p99"], "<= 1 ms" if target else "info (GIL shared)",
                     s["p99"] <= 1.0 if target else None)  # fmt: skip
        report.data[label] = [{"metered_ms": rec["duration_ms"], "billed_ms": rec["billed_ms"], "init_ms": rec["init_ms"],
                               "handler_wall_ms": wall, "cold": c} for rec, wall, c in rows]  # fmt: skip
    report.notes.append("handler: sleep (70 %) or busy-spin (30 %) for 0, 0.05-1, 1-20 or 20-200 ms, 256 MB; it times "
                        "itself with perf_counter from its first to its last statement")
    report.print(as_json=args.json)


if __name__ == "__main__":
    main()
