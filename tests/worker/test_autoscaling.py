"""The live autoscaler, keep-alive policy and prewarm pool, on real sandboxes.

Scaling decisions run on the Worker's injected clock (a fake one here) and are applied by
`scale_tick()`, the same call the Worker's 2-second loop makes."""

import asyncio
import time

import pytest

from mist.core.keepalive import Decision, FunctionSpec
from mist.worker import Worker
from mist.worker.worker import FunctionStatistics
from tests.worker.conftest import call, value, worker_config

pytestmark = pytest.mark.sandbox

SLEEPY = "import time\ndef handler(event, context):\n    time.sleep(event)\n    return 'done'\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def instances(worker: Worker, name: str = "fn") -> int:
    return sum(f.instances for f in worker.statistics().functions if f.name == name)


def stats_of(worker: Worker, name: str = "fn") -> FunctionStatistics:
    found = [f for f in worker.statistics().functions if f.name == name]
    return found[0] if found else FunctionStatistics(name, 0, 0, 0, 0, 0, 0, 0, 0)


async def settle(worker: Worker, name: str, expected: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while instances(worker, name) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return instances(worker, name)


class PrewarmAfter:
    """A keep-alive policy that unloads at once and prewarms `delay` seconds later for `keep`."""

    name = "prewarm-after"

    def __init__(self, delay: float, keep: float) -> None:
        self.delay, self.keep = delay, keep

    def initial_state(self, spec: FunctionSpec) -> None:
        return None

    def on_arrival(self, spec, state, now, idle_s):
        return state

    def on_idle(self, spec, state, now):
        return Decision(self.delay, self.keep), state


async def test_a_burst_starts_an_instance_per_queued_call_at_once(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=2))
    await w.start()
    try:
        spec = function(SLEEPY)
        t0 = time.monotonic()
        results = await asyncio.gather(*(call(w, spec, 0.5) for _ in range(8)))
        took = time.monotonic() - t0
        assert [value(r) for r in results] == ["done"] * 8
        assert instances(w) == 8
        assert took < 2.0  # side by side, not one after the other (8 x 0.5 s)
    finally:
        await w.stop()


async def test_load_above_the_target_utilisation_starts_warm_instances_ahead_of_demand(tmp_path, function):
    clock = Clock()
    w = Worker(worker_config(tmp_path, keepalive_s=600), clock=clock)
    await w.start()
    try:
        spec = function(SLEEPY)
        # 4 calls in flight for 10 s of (fake) time: ceil(4 / 0.7) = 6 instances wanted
        running = [asyncio.create_task(call(w, spec, 1.0)) for _ in range(4)]
        while stats_of(w).busy < 4:
            await asyncio.sleep(0.01)
        clock.now += 10
        tick = w.scale_tick()
        assert tick.started == 2 and stats_of(w).desired == 6
        assert await settle(w, "fn", 6) == 6
        await asyncio.gather(*running)
        extra = await asyncio.gather(*(call(w, spec, 0.0) for _ in range(6)))
        assert not any(r.cold_start for r in extra)  # the two started ahead were initialized
    finally:
        await w.stop()


async def test_after_the_load_ends_instances_scale_down_gradually_then_to_zero(tmp_path, function):
    clock = Clock()
    w = Worker(worker_config(tmp_path, keepalive_s=120), clock=clock)
    await w.start()
    try:
        spec = function(SLEEPY)
        await asyncio.gather(*(call(w, spec, 0.3) for _ in range(8)))
        assert instances(w) == 8
        counts = []
        for _ in range(8):  # idle, past the stable window and then the 120 s keep-alive
            clock.now += 30
            w.scale_tick()
            counts.append(await settle(w, "fn", stats_of(w).desired))
        assert counts[-1] == 0
        assert counts == sorted(counts, reverse=True)
        assert all(b >= a // 2 for a, b in zip(counts, counts[1:]))  # at most halved per tick
        assert (await call(w, spec, 0)).cold_start  # the next call starts from zero again
    finally:
        await w.stop()


async def test_min_instances_stay_through_scale_down(tmp_path, function):
    clock = Clock()
    w = Worker(worker_config(tmp_path, keepalive_s=0), clock=clock)
    await w.start()
    try:
        spec = function(SLEEPY, min_instances=2)
        await w.provision(spec)
        await asyncio.gather(*(call(w, spec, 0.3) for _ in range(5)))
        for _ in range(6):
            clock.now += 100
            w.scale_tick()
        assert await settle(w, "fn", 2) == 2
    finally:
        await w.stop()


async def test_the_keep_alive_policy_unloads_an_idle_function_and_prewarms_it_before_its_next_call(tmp_path, function):
    clock = Clock()
    w = Worker(worker_config(tmp_path), clock=clock, keepalive_policy=PrewarmAfter(delay=300, keep=60))
    await w.start()
    try:
        spec = function(SLEEPY)
        assert (await call(w, spec, 0)).cold_start
        clock.now += 5  # idle 5 s: the policy said "unload now, prewarm at 300 s for 60 s"
        w.scale_tick()
        assert await settle(w, "fn", 0) == 0
        assert stats_of(w).prewarm_delay_s == 300 and stats_of(w).keepalive_s == 60
        clock.now += 300  # 305 s idle: inside the prewarm window
        assert w.scale_tick().started == 1
        assert await settle(w, "fn", 1) == 1
        warm = await call(w, spec, 0)
        assert not warm.cold_start  # prewarmed ahead of the call
        clock.now += 400  # this idle period's window has passed too
        w.scale_tick()
        clock.now += 2
        w.scale_tick()
        assert await settle(w, "fn", 0) == 0
    finally:
        await w.stop()


async def test_back_to_back_calls_do_not_ask_the_policy_for_every_gap(tmp_path, function):
    class Counting(PrewarmAfter):
        idles = 0

        def on_idle(self, spec, state, now):
            Counting.idles += 1
            return Decision(0, 600), state

    clock = Clock()
    w = Worker(worker_config(tmp_path), clock=clock, keepalive_policy=Counting(0, 600))
    await w.start()
    try:
        spec = function(SLEEPY)
        for _ in range(20):
            await call(w, spec, 0)
            clock.now += 0.01  # 10 ms gaps: one busy period
        clock.now += 2
        w.scale_tick()
        assert Counting.idles == 1
        assert stats_of(w).keepalive_s == 600
    finally:
        await w.stop()


async def test_the_policy_learns_each_arrival_in_order_after_the_answer_not_before_it(tmp_path, function):
    class Recording(PrewarmAfter):
        def __init__(self) -> None:
            super().__init__(0, 600)
            self.heard: list[tuple] = []

        def on_arrival(self, spec, state, now, idle_s):
            self.heard.append(("arrival", now, idle_s))
            return state

        def on_idle(self, spec, state, now):
            self.heard.append(("idle", now))
            return super().on_idle(spec, state, now)

    clock = Clock()
    policy = Recording()
    w = Worker(worker_config(tmp_path), clock=clock, keepalive_policy=policy)
    await w.start()
    try:
        spec = function(SLEEPY)
        await call(w, spec, 0)
        await asyncio.sleep(0)
        assert policy.heard == [("arrival", 1000.0, None)]
        clock.now += 30  # idle 30 s, not yet reported (no tick): the next arrival reports it
        result = await call(w, spec, 0)
        # the answer is back and the policy has not run: its time was not the caller's
        assert not result.cold_start and len(policy.heard) == 1
        await asyncio.sleep(0)
        assert policy.heard[1:] == [("idle", 1000.0), ("arrival", 1030.0, 30.0)]
        clock.now += 30
        await call(w, spec, 0)
        clock.now += 5
        w.scale_tick()  # the tick reports the idle period that began at 1030: after that arrival
        assert policy.heard[3:] == [("idle", 1030.0), ("arrival", 1060.0, 30.0), ("idle", 1060.0)]
    finally:
        await w.stop()


async def test_the_pool_grows_after_a_burst_of_cold_starts_and_serves_the_next_burst(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=1, prewarm_max=16))
    await w.start()
    try:
        assert await w.wait_prewarmed()
        first = function(SLEEPY)
        await asyncio.gather(*(call(w, first, 0.2) for _ in range(6)))
        assert w.statistics().prewarm_target >= 6
        deadline = time.monotonic() + 10
        while w.statistics().prewarmed < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert w.statistics().prewarmed >= 6
        before = w.statistics().pool_cold_starts
        second = function(SLEEPY, name="other")
        await asyncio.gather(*(call(w, second, 0.2) for _ in range(6)))
        assert w.statistics().pool_cold_starts - before == 6  # every one from the pool
    finally:
        await w.stop()
