"""Multi-tenant isolation: does a tenant flooding at 10x its quota raise another tenant's p99?

Two tenants with the same quota (rate `--quota` requests/s, burst = quota / 5, max_concurrency
4, max_queued 20, weight 1) each call their own function (sleeps 20 ms: an I/O-bound
handler). Tenant `steady` sends an open-loop Poisson stream at `--steady-rate` requests/s and
measures its latency; tenant `noisy` sends open-loop at a fixed rate from another process:

  phase 0: steady alone;
  phase 1: noisy at its quota;
  phase 2: noisy at 10x its quota (the flood: 9 of 10 requests are refused 429 at the edge).

Target: steady's p99 in phase 2 at most 10 % above phase 1 (and shown next to phase 0). Each
phase runs `--duration` seconds after a warm-up; phases are interleaved `--rounds` times and
pooled, so machine noise spreads over all of them. A second scenario saturates the machine
(`mist up --max-inflight`): noisy's concurrency is not capped and its flood queues for the
machine's slots; fair queuing serves steady's requests ahead of noisy's backlog.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time

from _common import MistServer, Report, arg_parser, auth_headers, client, deploy, summary

SLEEP_20MS = "import time\n\ndef handler(event, context):\n    time.sleep(0.02)\n    return 'ok'\n"


def request_bytes(url: str, function: str, tenant: str) -> tuple[str, int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_headers(url).items())
    body = b"{}"
    raw = (f"POST /v1/functions/{function}/invocations HTTP/1.1\r\nHost: {host}\r\n{auth}X-Mist-Tenant: {tenant}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    return host, int(port), raw


async def _one(pool: asyncio.Queue, host: str, port: int, raw: bytes) -> tuple[float, int]:
    conn = pool.get_nowait() if not pool.empty() else await asyncio.open_connection(host, port)
    reader, writer = conn
    t0 = time.perf_counter()
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    elapsed = (time.perf_counter() - t0) * 1000
    pool.put_nowait(conn)
    return elapsed, status


async def open_loop(url: str, function: str, tenant: str, rate: float, duration: float, *, poisson: bool,
                    seed: int) -> list[tuple[float, int]]:
    """Send at `rate` requests/s for `duration` s (Poisson or evenly spaced), never waiting for
    answers to send the next; (latency ms, status) of each."""
    host, port, raw = request_bytes(url, function, tenant)
    rng = random.Random(seed)
    pool: asyncio.Queue = asyncio.Queue()
    tasks = []
    start = time.perf_counter()
    t = 0.0
    while t < duration:
        delay = start + t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(pool, host, port, raw)))
        t += rng.expovariate(rate) if poisson else 1.0 / rate
    results = await asyncio.gather(*tasks, return_exceptions=True)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return [r for r in results if isinstance(r, tuple)]


def _noisy_process(url: str, rate: float, duration: float, seed: int, out: multiprocessing.Queue) -> None:
    res = asyncio.run(open_loop(url, "work", "noisy", rate, duration, poisson=False, seed=seed))
    out.put((len(res), sum(1 for _, s in res if s == 429), sum(1 for _, s in res if s == 200)))


def phase(url: str, steady_rate: float, noisy_rate: float, duration: float, seed: int) -> dict:
    out: multiprocessing.Queue = multiprocessing.Queue()
    noisy = None
    if noisy_rate > 0:
        noisy = multiprocessing.Process(target=_noisy_process, args=(url, noisy_rate, duration + 1.0, seed, out))
        noisy.start()
        time.sleep(0.5)  # the flood is on before steady starts measuring
    res = asyncio.run(open_loop(url, "work", "steady", steady_rate, duration, poisson=True, seed=seed))
    counts = (0, 0, 0)
    if noisy is not None:
        noisy.join()
        counts = out.get()
    return {"steady": res, "noisy_sent": counts[0], "noisy_refused": counts[1], "noisy_ok": counts[2]}


def scenario(url: str, args, quota: float, rounds: int) -> dict[str, dict]:
    pooled: dict[str, list] = {"0": [], "1": [], "2": []}
    noisy = {"1": [0, 0, 0], "2": [0, 0, 0]}
    for r in range(rounds):
        for name, rate in (("0", 0.0), ("1", quota), ("2", 10 * quota)):
            got = phase(url, args.steady_rate, rate, args.duration, seed=1000 * r + int(name))
            pooled[name].extend(got["steady"])
            if name in noisy:
                for i, k in enumerate(("noisy_sent", "noisy_refused", "noisy_ok")):
                    noisy[name][i] += got[k]
    out = {}
    for name, res in pooled.items():
        lat = [ms for ms, status in res if status == 200]
        out[name] = {**summary(lat), "errors": sum(1 for _, s in res if s != 200),
                     "noisy": noisy.get(name)}
    return out


def main() -> None:
    p = arg_parser(__doc__)
    p.add_argument("--quota", type=float, default=100.0, help="each tenant's rate limit, requests/s (default 100)")
    p.add_argument("--steady-rate", type=float, default=80.0, help="steady's requests/s (default 80)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per phase (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three phases (default 3)")
    p.add_argument("--max-inflight", type=int, default=8, help="the machine's slots in scenario B (default 8)")
    args = p.parse_args()
    report = Report("fairness")
    quota = args.quota
    limits = {"rate_per_s": quota, "burst": max(1, int(quota / 5)), "max_concurrency": 4, "max_queued": 20}
    with MistServer(args.mist_arg) as server, client(server.url) as c:
        for tenant in ("steady", "noisy"):
            assert c.post("/v1/tenants", json={"name": tenant, "limits": limits}).status_code == 201
            c.headers["X-Mist-Tenant"] = tenant
            deploy(c, "work", {"main.py": SLEEP_20MS})
            del c.headers["X-Mist-Tenant"]
        asyncio.run(open_loop(server.url, "work", "steady", 50, 2.0, poisson=True, seed=7))  # warm-up
        asyncio.run(open_loop(server.url, "work", "noisy", 50, 2.0, poisson=True, seed=8))
        a = scenario(server.url, args, quota, args.rounds)
    p0, p1, p2 = a["0"], a["1"], a["2"]
    report.row("A. quotas: steady's latency alone (phase 0)", f"p50 {p0['p50']:.2f} / p99 {p0['p99']:.2f} ms",
               f"n={p0['n']}, errors {p0['errors']}")
    report.row("A. ... noisy at its quota (phase 1)", f"p50 {p1['p50']:.2f} / p99 {p1['p99']:.2f} ms",
               f"noisy sent/refused/ok {p1['noisy']}")
    report.row("A. ... noisy at 10x its quota (phase 2)", f"p50 {p2['p50']:.2f} / p99 {p2['p99']:.2f} ms",
               f"noisy sent/refused/ok {p2['noisy']}")
    rise = p2["p99"] / p1["p99"] - 1
    report.row("A. steady's p99, flood vs noisy at quota", f"{rise * 100:+.1f} %",
               f"vs steady alone: {(p2['p99'] / p0['p99'] - 1) * 100:+.1f} %")
    report.check("A. p99 rise under a 10x flood", round(rise * 100, 1), "<= 10 %", rise <= 0.10)

    # B: the machine saturated; noisy's concurrency uncapped: its flood waits for the machine's slots
    saturated = {**limits, "max_concurrency": None, "max_queued": 2000, "rate_per_s": 10 * quota, "burst": int(10 * quota)}
    with MistServer([*args.mist_arg, f"--max-inflight={args.max_inflight}"]) as server, client(server.url) as c:
        for tenant, lim in (("steady", limits), ("noisy", saturated)):
            assert c.post("/v1/tenants", json={"name": tenant, "limits": lim}).status_code == 201
            c.headers["X-Mist-Tenant"] = tenant
            deploy(c, "work", {"main.py": SLEEP_20MS})
            del c.headers["X-Mist-Tenant"]
        asyncio.run(open_loop(server.url, "work", "steady", 50, 2.0, poisson=True, seed=7))
        b = scenario(server.url, args, quota, 1)
    b0, b2 = b["0"], b["2"]
    report.row(f"B. machine of {args.max_inflight} slots: steady alone",
               f"p50 {b0['p50']:.2f} / p99 {b0['p99']:.2f} ms", f"n={b0['n']}")
    report.row("B. ... noisy flooding 10x into the machine's queue",
               f"p50 {b2['p50']:.2f} / p99 {b2['p99']:.2f} ms",
               f"noisy sent/refused/ok {b2['noisy']} (its backlog waits; fair queuing serves steady first)")
    report.print(args.json)


if __name__ == "__main__":
    main()
