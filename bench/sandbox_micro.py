"""Sandbox micro-benchmark at the Worker API: cold start from the prewarm pool, cold start on
the full fork path, and a warm invocation. 100 sparse runs each; prints p50/p99 in ms.
`--throughput S`: instead, N concurrent tasks (default 64) call Worker.invoke on a hello function
(memory 128, concurrency 1, default budget) for S seconds; prints req/s and the instance count.

    sudo .venv/bin/python bench/sandbox_micro.py [--runs 100] [--throughput 5 [--tasks 64]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mist.worker import SandboxSpec, Worker, WorkerConfig  # noqa: E402
from _common import smaps  # noqa: E402

HANDLER = "def handler(event, context):\n    return {'ok': True, 'n': event.get('n')}\n"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(name: str, values: list[float]) -> None:
    if not values:
        print(f"{name:<28} (no samples)")
        return
    print(f"{name:<28} p50 {pct(values, 50):7.3f} ms   p99 {pct(values, 99):7.3f} ms   "
          f"mean {statistics.fmean(values):7.3f} ms   n={len(values)}")


STEPS: dict[str, list[dict[str, float]]] = {}  # cold-start breakdowns per run label


async def timed(worker: Worker, spec: SandboxSpec, i: int, label: str = "") -> float:
    t0 = time.perf_counter()
    result = await worker.invoke(spec, f"bench-{i}", b'{"n": %d}' % i)
    elapsed = (time.perf_counter() - t0) * 1000
    assert result.ok, result.error
    if label and result.init_steps:
        STEPS.setdefault(label, []).append({**result.init_steps, "invoke": result.duration_ms, "total": elapsed})
    return elapsed


def report_steps(label: str) -> None:
    runs = STEPS.get(label, [])
    if not runs:
        return
    names = list(runs[0])
    print("   " + "  ".join(f"{n} {pct([r.get(n, 0.0) for r in runs], 50):.3f}" for n in names) + "  (p50 ms)")


async def cold(tmp: Path, code: Path, runs: int, prewarm: int, egress: tuple[str, ...] = (),
               **config: object) -> list[float]:
    """`egress`: the function has these egress rules (a sandbox in a prepared network namespace)."""
    worker = Worker(WorkerConfig(data_dir=tmp / f"data-{prewarm}{'-net' if egress else ''}", prewarm=prewarm,
                                 memory_budget_mb=8192, **config))  # type: ignore[arg-type]
    await worker.start()
    times = []
    try:
        for i in range(runs):
            if prewarm:
                await worker.wait_prewarmed()
            await asyncio.sleep(0.02)  # sparse: let the machine settle
            spec = SandboxSpec("bench", i + 1, code, "main.handler", **({"egress": egress} if egress else {}))
            times.append(await timed(worker, spec, i, label=f"prewarm={prewarm}{' egress' if egress else ''}"))
            await worker.retire("bench")
    finally:
        await worker.stop()
    return times


async def warm(tmp: Path, code: Path, runs: int) -> list[float]:
    worker = Worker(WorkerConfig(data_dir=tmp / "data-warm", prewarm=0))
    await worker.start()
    spec = SandboxSpec("bench", 1, code, "main.handler")
    times = []
    try:
        await timed(worker, spec, 0)
        for i in range(runs):
            await asyncio.sleep(0.005)
            times.append(await timed(worker, spec, i))
    finally:
        await worker.stop()
    return times


async def memory(tmp: Path, code: Path, n: int, **config: object) -> None:
    """n sparse cold starts from the pool (n functions kept warm), then the PSS of the instances."""
    worker = Worker(WorkerConfig(data_dir=tmp / "data-mem", **config))  # type: ignore[arg-type]
    await worker.start()
    times, instances = [], []
    first: dict[str, int] = {}
    try:
        for i in range(n):
            await worker.wait_prewarmed()
            await asyncio.sleep(0.05)
            spec = SandboxSpec(f"f{i}", 1, code, "main.handler")
            t0 = time.perf_counter()
            result = await worker.invoke(spec, "bench", b'{"n": 1}')
            times.append((time.perf_counter() - t0) * 1000)
            assert result.ok and result.cold_start, result.error
            instances.append(worker._functions[result.instance_id])  # noqa: SLF001
            if i == 0:
                await asyncio.sleep(1.0)
                first = smaps(instances[0].pid)
        await worker.wait_prewarmed()
        await asyncio.sleep(1.0)
        pss = [smaps(sb.pid).get("Pss", 0) for sb in instances]
        uss = [(lambda r: r.get("Private_Clean", 0) + r.get("Private_Dirty", 0))(smaps(sb.pid)) for sb in instances]
        pool = [smaps(sb.pid).get("Pss", 0) for sb in worker._pool]  # noqa: SLF001
        zygote = smaps(worker.statistics().zygote_pid).get("Pss", 0)
        print(f"config {config}")
        report("  cold start, pool hit", times)
        report("  ... after the first 3", times[3:])
        print(f"  one instance (first, others absent)  PSS {first.get('Pss', 0) / 1024:6.2f} MB  "
              f"USS {(first.get('Private_Clean', 0) + first.get('Private_Dirty', 0)) / 1024:6.2f} MB")
        print(f"  {n} instances: PSS mean {statistics.fmean(pss) / 1024:6.2f} MB  median "
              f"{pct(pss, 50) / 1024:6.2f}  max {max(pss) / 1024:6.2f}   USS mean {statistics.fmean(uss) / 1024:6.2f} MB")
        print(f"  zygote PSS {zygote / 1024:6.2f} MB   pool sandboxes PSS {[round(p / 1024, 2) for p in pool]} MB")
    finally:
        await worker.stop()


def sandbox_ticks(worker: Worker) -> int:
    """utime + stime of every live sandbox process (clock ticks)."""
    total = 0
    for sb in list(worker._all.values()):  # noqa: SLF001 - a benchmark peeking in
        try:
            with open(f"/proc/{sb.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


async def throughput(tmp: Path, code: Path, seconds: float, tasks: int, **config: object) -> None:
    worker = Worker(WorkerConfig(data_dir=tmp / "data-tp", **config))  # type: ignore[arg-type]
    await worker.start()
    spec = SandboxSpec("bench", 1, code, "main.handler")
    payload = b'{"n": 1}'
    stop = False

    async def loop() -> None:
        while not stop:
            result = await worker.invoke(spec, "bench", payload)
            assert result.ok, result.error

    try:
        await asyncio.gather(*(worker.invoke(spec, "warmup", payload) for _ in range(tasks)))
        runners = [asyncio.create_task(loop()) for _ in range(tasks)]
        await asyncio.sleep(1.0)  # let every instance start
        ticks0 = sandbox_ticks(worker)
        inv0, t0, cpu0 = worker.statistics().invocations, time.perf_counter(), os.times()
        await asyncio.sleep(seconds)
        inv1, t1, cpu1 = worker.statistics().invocations, time.perf_counter(), os.times()
        stop = True
        await asyncio.gather(*runners)
        n = inv1 - inv0
        stats = worker.statistics()
        user, system = (cpu1.user - cpu0.user) / n * 1e6, (cpu1.system - cpu0.system) / n * 1e6
        sandbox_cpu = (sandbox_ticks(worker) - ticks0) / os.sysconf("SC_CLK_TCK") / n * 1e6
        print(f"throughput {n / (t1 - t0):9.0f} req/s   worker CPU/req {user + system:6.1f} us "
              f"(user {user:.1f}, sys {system:.1f})   sandboxes CPU/req {sandbox_cpu:5.1f} us   instances {stats.instances}   tasks {tasks}   "
              f"config {config or 'default'}")
    finally:
        await worker.stop()


def direct(runs: int) -> list[float]:
    namespace: dict = {}
    exec(HANDLER, namespace)
    handler = namespace["handler"]
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        handler({"n": i}, None)
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--throughput", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--budget", type=int, default=4096, help="memory_budget_mb (instances = budget / 128)")
    parser.add_argument("--prewarm", type=int, default=2)
    parser.add_argument("--memory", type=int, default=0, metavar="N",
                        help="instead: N pool cold starts (N functions), then their PSS")
    parser.add_argument("--prefault", choices=("touched", "all", "none"), default=None)
    parser.add_argument("--cold-only", action="store_true", help="only the cold starts (pool, full path, egress)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mist-bench-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)
        code = tmp / "code"
        code.mkdir(mode=0o755)
        (code / "main.py").write_text(HANDLER)
        (code / "main.py").chmod(0o644)
        extra = {} if args.prefault is None else {"prefault": args.prefault}
        if args.memory:
            await memory(tmp, code, args.memory, prewarm=args.prewarm, **extra)
            return
        if args.throughput:
            await throughput(tmp, code, args.throughput, args.tasks,
                             memory_budget_mb=args.budget, prewarm=args.prewarm)
            return
        report("cold, prewarm pool hit", await cold(tmp, code, args.runs, prewarm=2, **extra))
        report_steps("prewarm=2")
        report("cold, full fork path", await cold(tmp, code, args.runs, prewarm=0))
        report_steps("prewarm=0")
        if "egress" in SandboxSpec.__dataclass_fields__:
            report("cold, egress (full path)", await cold(tmp, code, args.runs, prewarm=0, egress=("203.0.113.0/24:443",)))
            report_steps("prewarm=0 egress")
        if args.cold_only:
            return
        w = await warm(tmp, code, args.runs)
        report("warm invoke", w)
        d_ = direct(args.runs)
        report("direct call (baseline)", d_)
        print(f"warm overhead over direct call: p50 {pct(w, 50) - pct(d_, 50):.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
