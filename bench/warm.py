"""Warm invocations: added latency and throughput, mist vs. peers, in one run.

(i) Latency, one keep-alive connection (httpx), N sequential requests after a warm-up, in
    interleaved rounds so every side sees the same machine state:
      - mist: `POST /v1/functions/hello/invocations` of a warm hello instance;
      - the same handler called directly in-process (the zero of "added latency");
      - the loopback HTTP floor: the same client against a raw-socket server with a fixed answer;
      - functions-framework serving the same handler (one connection);
      - a direct call into a sandbox through a `mist.worker.Worker` of the benchmark's own (no
        HTTP; its own data dir, an event loop in a thread), in the same rounds: the zero of the
        target's "added" figure (`--skip-worker-direct` skips it);
      - info: the same direct call after the server stopped, then that Worker driven by as many
        concurrent callers as wrk's connections: the throughput limit of the sandboxes
        themselves, whatever serves HTTP in front of them.
(ii) Throughput: `wrk -c64 -d10s` POST (bench/wrk_post.lua) against mist's invocation route and
    against Google's functions-framework (own venv bench/.venvs/ff, production mode = gunicorn,
    as its CLI runs it without --debug) serving the same handler, in `--rounds` alternating
    rounds (mist, ff, mist, ff, ...): this VM's speed drifts by tens of percent within minutes,
    so each side's figure is its total over all rounds and every round's ratio is shown too. mist runs with isolation and
    invocation records on (the record count is checked after the run). A limit is measured
    too: the smallest ASGI app on mist's own server stack (uvicorn + httptools + uvloop, one
    process, fixed answer; bench/peers/asgi_floor.py).

Targets: mist (raw-socket client) adds <= 0.3 ms p50 over the direct Worker call; mist
requests/s >= 3x functions-framework's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    BENCH_DIR,
    HELLO_RESULT,
    HELLO_SOURCE,
    REAL_PYTHON,
    MistServer,
    Peer,
    RawHTTP,
    Report,
    arg_parser,
    client,
    deploy,
    free_port,
    invoke,
    run_wrk,
    start_floor,
    statistics,
    summary,
)

FF_VENV = BENCH_DIR / ".venvs" / "ff"
FF_BIN = FF_VENV / "bin" / "functions-framework"
EVENT = {"name": "bench"}


# --------------------------------------------------------------------------- peers


def ensure_ff_venv() -> None:
    """functions-framework's venv, on the interpreter mist runs on (made again if it is not)."""
    if FF_BIN.exists() and os.path.realpath(FF_VENV / "bin" / "python") == REAL_PYTHON:
        return
    if FF_VENV.exists():
        shutil.rmtree(FF_VENV)
    print(f"creating {FF_VENV} (functions-framework) on {REAL_PYTHON} ...", file=sys.stderr, flush=True)
    FF_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([REAL_PYTHON, "-m", "venv", str(FF_VENV)], check=True)
    subprocess.run([str(FF_VENV / "bin" / "pip"), "install", "-q", "functions-framework"], check=True)


def start_asgi_floor() -> Peer:
    port = free_port()
    return Peer([sys.executable, str(BENCH_DIR / "peers" / "asgi_floor.py"), str(port)], port)


def start_ff(workers: int | None, threads: int | None) -> Peer:
    ensure_ff_venv()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "WORKERS", "THREADS")}
    if workers:
        env["WORKERS"] = str(workers)
    if threads:
        env["THREADS"] = str(threads)
    cmd = [str(FF_BIN), "--target=handler", f"--source={BENCH_DIR / 'peers' / 'ff_main.py'}",
           "--host=127.0.0.1", f"--port={port}"]  # fmt: skip
    return Peer(cmd, port, env)


# --------------------------------------------------------------------------- latency


def time_http(c, path: str, n: int, out: list[float]) -> None:
    body = json.dumps(EVENT).encode()
    headers = {"content-type": "application/json"}
    for _ in range(n):
        t0 = time.perf_counter_ns()
        r = c.post(path, content=body, headers=headers)
        t1 = time.perf_counter_ns()
        if r.status_code != 200:
            raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:500]}")
        out.append((t1 - t0) / 1e6)


def time_raw(url: str, path: str, n: int, out: list[float]) -> None:
    """Like time_http, with the thinnest client there is (`_common.RawHTTP`): httpx alone costs
    ~0.2 ms per request, which would hide what the server adds."""
    with RawHTTP(url) as raw:
        req = raw.request(path, json.dumps(EVENT).encode())
        for _ in range(n):
            ms, status, _, _ = raw.send(req)
            if status != 200:
                raise RuntimeError(f"POST {path} answered {status}")
            out.append(ms)


def time_inprocess(n: int) -> list[float]:
    ns: dict = {}
    exec(compile(HELLO_SOURCE, "main.py", "exec"), ns)
    handler = ns["handler"]

    class Ctx:
        function_name = "hello"

    ctx = Ctx()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        handler(EVENT, ctx)
        t1 = time.perf_counter_ns()
        out.append((t1 - t0) / 1e6)
    return out


class DirectWorker:
    """A Worker of its own, run by an event loop in a thread, for `Worker.invoke` timings taken
    between the HTTP samples: the same moments of a noisy machine as theirs. The difference of
    the two p50s is the target's "added" figure; taken in separate phases it moved by up to
    0.1 ms with the machine's pace between phases (docs/benchmarks.md)."""

    def __init__(self) -> None:
        from mist.worker import Worker, WorkerConfig  # type: ignore[attr-defined]
        from mist.worker.types import SandboxSpec

        self._td = tempfile.TemporaryDirectory(prefix="bench-worker-")
        code = Path(self._td.name) / "code"
        code.mkdir()
        (code / "main.py").write_text(HELLO_SOURCE)
        os.chmod(self._td.name, 0o755)
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="direct-worker", daemon=True)
        self._thread.start()
        self.worker = Worker(WorkerConfig(data_dir=Path(self._td.name) / "data"))
        self.spec = SandboxSpec(function_name="hello", version=1, code_dir=code, handler="main.handler")
        self.payload = json.dumps(EVENT).encode()
        self._calls = 0
        self._run(self.worker.start())
        self.time(200, [])  # warm

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    async def _timed(self) -> float:
        self._calls += 1
        t0 = time.perf_counter_ns()
        res = await self.worker.invoke(self.spec, f"bench-{self._calls}", self.payload)
        t1 = time.perf_counter_ns()
        if not res.ok:
            raise RuntimeError(f"worker invoke failed: {res.error}")
        return (t1 - t0) / 1e6

    def time(self, n: int, out: list[float]) -> None:
        for _ in range(n):
            out.append(self._run(self._timed()))

    def rate(self, callers: int, seconds: float) -> float:
        """Invocations/s of `callers` concurrent callers for `seconds`, after 2 s in which the
        instances for them are started."""
        return self._run(self._rate(callers, seconds))

    async def _rate(self, callers: int, seconds: float) -> float:
        done = 0
        loop = asyncio.get_running_loop()
        warm_s = 2.0
        start = loop.time()
        until = start + warm_s + seconds

        async def caller(c: int) -> None:
            nonlocal done
            i = 0
            while loop.time() < until:
                await self.worker.invoke(self.spec, f"rate-{c}-{i}", self.payload)
                i += 1
                if loop.time() >= until - seconds:  # counted once every caller started
                    done += 1

        await asyncio.gather(*(caller(c) for c in range(callers)))
        return done / (loop.time() - start - warm_s)

    def close(self) -> None:
        try:
            self._run(self.worker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()
            self._td.cleanup()


def time_worker_direct(n: int, callers: int, seconds: float) -> tuple[list[float] | None, float | None, str]:
    """Info, with the server stopped: `DirectWorker`'s latencies in a phase of their own, then
    the invocations/s of `callers` concurrent callers for `seconds` (the worker alone: the
    limit of what any gateway in front of it could serve)."""
    try:
        direct = DirectWorker()
    except Exception as exc:  # noqa: BLE001 - optional part: report, don't fail the benchmark
        return None, None, f"direct worker call failed: {type(exc).__name__}: {exc}"
    try:
        lat: list[float] = []
        direct.time(n, lat)
        return lat, direct.rate(callers, seconds), ""
    except Exception as exc:  # noqa: BLE001
        return None, None, f"direct worker call failed: {type(exc).__name__}: {exc}"
    finally:
        direct.close()


def kernel_counters() -> dict[str, int]:
    """Machine-wide: context switches (/proc/stat) and inter-processor interrupts (/proc/interrupts:
    rescheduling + function call, the ones a wake-up of a task on another CPU sends)."""
    out = {"switches": 0, "ipis": 0}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                out["switches"] = int(line.split()[1])
    with open("/proc/interrupts") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in ("RES:", "CAL:"):
                out["ipis"] += sum(int(x) for x in parts[1:] if x.isdigit())
    return out


def wrk_counted(url: str, **kw: object) -> dict:
    """run_wrk, with the machine's context switches and IPIs during the run (per request: "kernel")."""
    before = kernel_counters()
    res = run_wrk(url, **kw)  # type: ignore[arg-type]
    after = kernel_counters()
    res["kernel"] = {k: after[k] - before[k] for k in before}
    return res


def combine(runs: list[dict]) -> dict:
    """Several wrk runs of one side as one: requests and errors summed, requests/s over the
    summed duration, latency percentiles as the median of the runs' (wrk gives no histogram)."""
    total_us = sum(r["duration_us"] for r in runs)
    out = {"requests": sum(r["requests"] for r in runs), "duration_us": total_us,
           "errors": {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]},
           "latency_us": {k: sorted(r["latency_us"][k] for r in runs)[len(runs) // 2] for k in runs[0]["latency_us"]},
           "runs": runs}  # fmt: skip
    out["requests_per_s"] = out["requests"] / (total_us / 1e6)
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = arg_parser(__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="latency samples per side (default 2000)")
    ap.add_argument("--duration", type=float, default=10.0, help="wrk seconds per side and round (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds, mist then ff (default 3)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: leave the 2 CPUs to the servers)")
    ap.add_argument("--concurrency", type=int, default=None, help="hello's concurrency config (default: mist's default)")
    ap.add_argument("--ff-workers", type=int, default=None, help="WORKERS for functions-framework (default: its own, 1)")
    ap.add_argument("--ff-threads", type=int, default=None, help="THREADS for functions-framework (default: its own, 4 x CPUs)")
    ap.add_argument("--skip-worker-direct", action="store_true")
    args = ap.parse_args()
    rep = Report("warm")

    ff = start_ff(args.ff_workers, args.ff_threads)
    floor = start_floor()
    asgi = start_asgi_floor()
    try:
        with MistServer(args.mist_arg) as srv, client(srv.url) as c, client(ff.url) as cff, client(floor.url) as cfl:
            config = {} if args.concurrency is None else {"concurrency": args.concurrency}
            fv = deploy(c, "hello", config=config)
            r = invoke(c, "hello", EVENT)
            assert r.status_code == 200 and r.json() == HELLO_RESULT, (r.status_code, r.text)
            path = "/v1/functions/hello/invocations"
            # ---- (i) latency
            warm = 200
            lat = {"mist": [], "ff": [], "floor": [], "mist_raw": [], "floor_raw": [], "direct": []}
            direct_now = None if args.skip_worker_direct else DirectWorker()
            time_http(c, path, warm, [])
            time_http(cff, "/", warm, [])
            time_http(cfl, "/", warm, [])
            time_raw(srv.url, path, warm, [])
            rounds = 20
            per = max(1, args.n // rounds)
            for _ in range(rounds):
                time_http(c, path, per, lat["mist"])
                time_http(cff, "/", per, lat["ff"])
                time_http(cfl, "/", per, lat["floor"])
                time_raw(srv.url, path, per, lat["mist_raw"])
                time_raw(floor.url, "/", per, lat["floor_raw"])
                if direct_now is not None:
                    direct_now.time(per, lat["direct"])
            if direct_now is not None:
                direct_now.close()
            r = invoke(c, "hello", EVENT)
            if r.headers.get("x-mist-cold-start") != "false":
                rep.notes.append("the hello instance was not warm at the end of the latency run")
            inproc = time_inprocess(args.n)

            # ---- (ii) throughput
            stats0 = statistics(c)
            run_wrk(srv.url + path, connections=args.connections, threads=args.wrk_threads, duration_s=2)  # warm-up
            run_wrk(ff.url + "/", connections=args.connections, threads=args.wrk_threads, duration_s=2)
            time.sleep(0.5)  # let the record writer flush
            stats1 = statistics(c)
            rounds_mist, rounds_ff = [], []
            for _ in range(max(1, args.rounds)):
                rounds_mist.append(wrk_counted(srv.url + path, connections=args.connections, threads=args.wrk_threads,
                                               duration_s=args.duration))  # fmt: skip
                rounds_ff.append(wrk_counted(ff.url + "/", connections=args.connections, threads=args.wrk_threads,
                                             duration_s=args.duration))  # fmt: skip
            time.sleep(0.5)  # let the record writer flush
            stats2 = statistics(c)
            w_mist, w_ff = combine(rounds_mist), combine(rounds_ff)
            run_wrk(asgi.url + "/", connections=args.connections, threads=args.wrk_threads, duration_s=2)
            w_asgi = run_wrk(asgi.url + "/", connections=args.connections, threads=args.wrk_threads,
                             duration_s=args.duration)  # fmt: skip
            # records written for the measured run (InvocationLog statistics, if exposed)
            def recs(s: dict) -> int | None:
                il = s.get("InvocationLog") or {}
                if "written" in il:
                    return int(il["written"]) + int(il.get("pending", 0))
                return None

            rec_before, rec_after = recs(stats1), recs(stats2)
            records = None if rec_before is None or rec_after is None else rec_after - rec_before
            rep.data["statistics_after_wrk"] = stats2
            rep.data["statistics_before"] = stats0
            rep.data["function_version"] = fv
    finally:
        ff.stop()
        floor.stop()
        asgi.stop()

    direct, direct_rate, why = (None, None, "skipped (--skip-worker-direct)") if args.skip_worker_direct \
        else time_worker_direct(args.n, args.connections, args.duration)

    sm, sf, sfl, si = summary(lat["mist"]), summary(lat["ff"]), summary(lat["floor"]), summary(inproc)
    rep.row("mist warm invoke (HTTP)", f"p50 {sm['p50']:.3f} / p99 {sm['p99']:.3f} ms", f"n={sm['n']}")
    rep.row("handler called in-process", f"p50 {si['p50'] * 1000:.2f} / p99 {si['p99'] * 1000:.2f} µs", "")
    rep.row("  => mist added latency", f"p50 {sm['p50'] - si['p50']:.3f} / p99 {sm['p99'] - si['p99']:.3f} ms",
            "vs. in-process call")  # fmt: skip
    rep.row("loopback HTTP floor (same client)", f"p50 {sfl['p50']:.3f} / p99 {sfl['p99']:.3f} ms",
            "raw-socket server, fixed answer")  # fmt: skip
    rep.row("  => mist above the HTTP floor", f"p50 {sm['p50'] - sfl['p50']:.3f} / p99 {sm['p99'] - sfl['p99']:.3f} ms", "")
    rep.row("functions-framework (HTTP)", f"p50 {sf['p50']:.3f} / p99 {sf['p99']:.3f} ms", "same client, one connection")
    smr, sflr = summary(lat["mist_raw"]), summary(lat["floor_raw"])
    rep.row("mist warm invoke (raw-socket client)", f"p50 {smr['p50']:.3f} / p99 {smr['p99']:.3f} ms", f"n={smr['n']}")
    rep.row("loopback HTTP floor (raw-socket client)", f"p50 {sflr['p50']:.3f} / p99 {sflr['p99']:.3f} ms", "")
    rep.data.update({"mist_raw_ms": smr, "floor_raw_ms": sflr})
    added = None
    if lat["direct"]:
        sdi = summary(lat["direct"])
        rep.row("direct Worker.invoke (no HTTP)", f"p50 {sdi['p50']:.3f} / p99 {sdi['p99']:.3f} ms",
                "own worker in this process, samples between the HTTP ones")  # fmt: skip
        added = smr["p50"] - sdi["p50"]
        rep.row("  => mist added over a direct sandbox call", f"p50 {added:.3f} ms",
                "raw-socket client; includes the HTTP round trip itself")  # fmt: skip
        rep.data["worker_direct_interleaved_ms"] = sdi
    if direct:
        sd = summary(direct)
        rep.row("direct Worker.invoke, after the server stopped", f"p50 {sd['p50']:.3f} / p99 {sd['p99']:.3f} ms",
                f"(info: a phase of its own; mist raw minus it {smr['p50'] - sd['p50']:.3f} ms)")  # fmt: skip
        rep.data["worker_direct_ms"] = sd
    else:
        rep.notes.append(f"direct worker call: {why}")
    ratio = w_mist["requests_per_s"] / w_ff["requests_per_s"]
    per_round = [m["requests_per_s"] / f["requests_per_s"] for m, f in zip(rounds_mist, rounds_ff)]
    for label, w in (("mist", w_mist), ("functions-framework", w_ff), ("limit: bare uvicorn ASGI app", w_asgi)):
        e = w["errors"]
        nerr = sum(e.values())
        lu = w["latency_us"]
        rep.row(f"wrk -c{args.connections} {label}", f"{w['requests_per_s']:.0f} req/s",
                f"latency p50 {lu['p50'] / 1000:.2f} / p99 {lu['p99'] / 1000:.2f} ms, errors {nerr} {e if nerr else ''}")  # fmt: skip
    if direct_rate:
        rep.row(f"limit: the worker alone, {args.connections} callers", f"{direct_rate:.0f} inv/s",
                f"Worker.invoke, no HTTP/records/metering; mist over HTTP reaches {w_mist['requests_per_s'] / direct_rate:.0%} of it")  # fmt: skip
        rep.data["worker_direct_per_s"] = direct_rate
    for label, runs in (("mist", rounds_mist), ("functions-framework", rounds_ff)):
        n = sum(r["requests"] for r in runs) or 1
        sw, ipis = (sum(r["kernel"][k] for r in runs) / n for k in ("switches", "ipis"))
        rep.row(f"  {label}: per request, machine-wide", f"{sw:.2f} switches", f"{ipis:.2f} IPIs (wake-ups on another CPU)")
        rep.data[f"kernel_per_request_{label}"] = {"switches": sw, "ipis": ipis}
    rep.row("throughput ratio mist / ff", f"{ratio:.2f}x", f"totals over {len(per_round)} alternating rounds")
    rep.row("  each round: mist / ff req/s", "  ".join(f"{m['requests_per_s']:.0f}/{f['requests_per_s']:.0f}"
                                                      for m, f in zip(rounds_mist, rounds_ff)),
            "ratios " + " ".join(f"{r:.2f}x" for r in per_round))  # fmt: skip
    if records is not None:
        rep.row("mist invocation records written", f"{records}", f"(wrk counted {w_mist['requests']} completed)")
        if records < w_mist["requests"]:
            rep.notes.append("fewer records than completed requests: check the record writer")
    else:
        rep.notes.append("GET /v1/statistics does not expose InvocationLog counts; records not verified")
    rep.check("mist warm p50 added ms", sm["p50"] - si["p50"], "(no target)", None)
    if added is not None:
        rep.check("added over direct sandbox call, p50 ms", added, "<= 0.3", added <= 0.3)
    rep.check("mist / ff requests/s", ratio, ">= 3x", ratio >= 3 and sum(w_mist["errors"].values()) == 0)
    if sum(w_mist["errors"].values()):
        rep.notes.append(f"mist wrk errors: {w_mist['errors']} (non-2xx count as errors; the check needs 0)")
    rep.data.update({"mist_ms": sm, "ff_ms": sf, "floor_ms": sfl, "inprocess_ms": si,
                     "wrk_mist": w_mist, "wrk_ff": w_ff, "round_ratios": per_round, "wrk_asgi_floor": w_asgi, "ff_env": {"WORKERS": args.ff_workers or "default(1)",
                     "THREADS": args.ff_threads or f"default({(os.cpu_count() or 1) * 4})"}})  # fmt: skip
    rep.notes.append(
        f"functions-framework in production mode: gunicorn gthread, WORKERS={args.ff_workers or 1}, "
        f"THREADS={args.ff_threads or (os.cpu_count() or 1) * 4} (its defaults unless overridden)"
    )
    rep.print(args.json)


if __name__ == "__main__":
    main()
