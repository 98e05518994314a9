"""Sandbox micro-benchmark at the Worker API: cold start from the prewarm pool, cold start on
the full fork path, and a warm invocation. 100 sparse runs each; prints p50/p99 in ms.

    sudo .venv/bin/python bench/sandbox_micro.py [--runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mist.worker import SandboxSpec, Worker, WorkerConfig  # noqa: E402

HANDLER = "def handler(event, context):\n    return {'ok': True, 'n': event.get('n')}\n"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(name: str, values: list[float]) -> None:
    print(f"{name:<28} p50 {pct(values, 50):7.3f} ms   p99 {pct(values, 99):7.3f} ms   "
          f"mean {statistics.fmean(values):7.3f} ms   n={len(values)}")


async def timed(worker: Worker, spec: SandboxSpec, i: int) -> float:
    t0 = time.perf_counter()
    result = await worker.invoke(spec, f"bench-{i}", b'{"n": %d}' % i)
    elapsed = (time.perf_counter() - t0) * 1000
    assert result.ok, result.error
    return elapsed


async def cold(tmp: Path, code: Path, runs: int, prewarm: int) -> list[float]:
    worker = Worker(WorkerConfig(data_dir=tmp / f"data-{prewarm}", prewarm=prewarm, memory_budget_mb=8192))
    await worker.start()
    times = []
    try:
        for i in range(runs):
            if prewarm:
                await worker.wait_prewarmed()
            await asyncio.sleep(0.02)  # sparse: let the machine settle
            spec = SandboxSpec("bench", i + 1, code, "main.handler")
            times.append(await timed(worker, spec, i))
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mist-bench-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)
        code = tmp / "code"
        code.mkdir(mode=0o755)
        (code / "main.py").write_text(HANDLER)
        (code / "main.py").chmod(0o644)
        report("cold, prewarm pool hit", await cold(tmp, code, args.runs, prewarm=2))
        report("cold, full fork path", await cold(tmp, code, args.runs, prewarm=0))
        w = await warm(tmp, code, args.runs)
        report("warm invoke", w)
        d_ = direct(args.runs)
        report("direct call (baseline)", d_)
        print(f"warm overhead over direct call: p50 {pct(w, 50) - pct(d_, 50):.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
