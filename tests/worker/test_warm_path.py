"""The warm path under contention: free slots are reused, queued invocations are served first
come first served, one per freed slot, and a caller that gives up does not lose the slot."""

import asyncio

import pytest

from mist.worker import Worker
from tests.worker.conftest import call, value, worker_config

pytestmark = pytest.mark.sandbox

SLOW = "import time\ndef handler(e, c):\n    time.sleep(e['sleep'])\n    return e['n']\n"


async def test_queued_invocations_are_served_in_arrival_order(tmp_path, function):
    w = Worker(worker_config(tmp_path, memory_budget_mb=256, prewarm=0))
    await w.start()
    try:
        spec = function(SLOW, memory_mb=256)
        done: list[int] = []

        async def run(n: int, sleep: float) -> None:
            done.append(value(await call(w, spec, {"n": n, "sleep": sleep})))

        tasks = [asyncio.ensure_future(run(0, 0.3))]
        await asyncio.sleep(0.1)
        for n in range(1, 6):
            tasks.append(asyncio.ensure_future(run(n, 0.01)))
            await asyncio.sleep(0.01)
        assert w.statistics().waiting == 5
        await asyncio.gather(*tasks)
        assert done == [0, 1, 2, 3, 4, 5]
        stats = w.statistics()
        assert (stats.waiting, stats.instances, stats.cold_starts) == (0, 1, 1)
    finally:
        await w.stop()


async def test_a_queued_caller_that_gives_up_does_not_hold_up_the_others(tmp_path, function):
    w = Worker(worker_config(tmp_path, memory_budget_mb=256, prewarm=0))
    await w.start()
    try:
        spec = function(SLOW, memory_mb=256)
        first = asyncio.ensure_future(call(w, spec, {"n": 1, "sleep": 0.3}))
        await asyncio.sleep(0.1)
        gives_up = asyncio.ensure_future(call(w, spec, {"n": 2, "sleep": 0}))
        await asyncio.sleep(0.02)
        patient = asyncio.ensure_future(call(w, spec, {"n": 3, "sleep": 0}))
        await asyncio.sleep(0.02)
        gives_up.cancel()
        assert (value(await first), value(await patient)) == (1, 3)
        with pytest.raises(asyncio.CancelledError):
            await gives_up
        assert w.statistics().waiting == 0
        assert value(await call(w, spec, {"n": 4, "sleep": 0})) == 4
        assert w.statistics().instances == 1
    finally:
        await w.stop()


async def test_many_concurrent_callers_share_the_instances_the_budget_allows(tmp_path, function):
    w = Worker(worker_config(tmp_path, memory_budget_mb=256, prewarm=0))
    await w.start()
    try:
        spec = function("def handler(e, c):\n    return e\n")
        results = await asyncio.gather(*(call(w, spec, n) for n in range(80)))
        assert [value(r) for r in results] == list(range(80))
        assert sum(r.cold_start for r in results) == 2
        stats = w.statistics()
        assert (stats.instances, stats.waiting, stats.invocations) == (2, 0, 80)
        (fn,) = stats.functions
        assert (fn.idle, fn.busy, fn.in_flight) == (2, 0, 0)
    finally:
        await w.stop()


async def test_a_concurrent_instance_takes_calls_up_to_its_concurrency(tmp_path, function):
    w = Worker(worker_config(tmp_path, memory_budget_mb=256, prewarm=0))
    await w.start()
    try:
        spec = function(SLOW, memory_mb=256, concurrency=3)
        calls = [asyncio.ensure_future(call(w, spec, {"n": n, "sleep": 0.2})) for n in range(4)]
        await asyncio.sleep(0.1)
        (fn,) = w.statistics().functions
        assert (fn.instances, fn.in_flight, fn.waiting) == (1, 3, 1)
        results = await asyncio.gather(*calls)
        assert [value(r) for r in results] == [0, 1, 2, 3]
        assert len({r.instance_id for r in results}) == 1
    finally:
        await w.stop()
