"""Admission: token buckets at the edge, concurrency limits and fair queuing around executions."""

import asyncio
import dataclasses
from datetime import datetime, timezone

import pytest

from mist.control.admission import Admission, MemoryRateLimiter
from mist.errors import InvalidRequest, LimitExceeded, NoCapacity
from mist.models import FunctionVersion, qualify
from mist.tenancy.model import TenantLimits


def fv(tenant="acme", name="f", **limits):
    return FunctionVersion(qualify(tenant, name), 1, "main.handler", 128, 30.0, 1, {}, "0" * 64, 1, None,
                           datetime.now(timezone.utc), **limits)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def admission(limits: dict[str, TenantLimits] | None = None, *, node_limit=None, clock=None):
    limits = limits or {}
    return Admission(lambda t: limits.get(t, TenantLimits()), node_limit=node_limit,
                     rates=MemoryRateLimiter(clock or Clock()))


async def test_rate_limits_of_tenant_and_function_refuse_with_retry_after_and_refill():
    clock = Clock()
    adm = admission({"acme": TenantLimits(rate_per_s=10, burst=2)}, clock=clock)
    f = fv()
    await adm.check_rate(f)
    await adm.check_rate(f)
    with pytest.raises(LimitExceeded) as exc:
        await adm.check_rate(f)
    assert "tenant acme" in exc.value.message and "10 requests/s, burst 2" in exc.value.message
    assert exc.value.retry_after == pytest.approx(0.1)
    clock.now = 0.1
    await adm.check_rate(f)
    g = fv(name="g", rate_per_s=1.0, burst=1)
    clock.now = 10
    await adm.check_rate(g)
    with pytest.raises(LimitExceeded) as exc:
        await adm.check_rate(g)
    assert "function g" in exc.value.message
    await adm.check_rate(fv(tenant="other"))  # another tenant has its own buckets


async def run_for(adm, f, started, release, timeout=5.0):
    async with adm.slot(f, timeout):
        started.append(f.name)
        await release.wait()


async def test_a_tenants_concurrency_limit_makes_invocations_wait_then_refuses_past_max_queued():
    adm = admission({"acme": TenantLimits(max_concurrency=2, max_queued=1)})
    release = asyncio.Event()
    started: list[str] = []
    tasks = [asyncio.create_task(run_for(adm, fv(), started, release)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert len(started) == 2 and adm.statistics().waiting == 1
    with pytest.raises(LimitExceeded) as exc:
        async with adm.slot(fv(), 1.0):
            pass
    assert "tenant acme: 1 queued requests" in exc.value.message
    assert "tenant acme: 2 concurrent executions" in exc.value.message
    other = asyncio.create_task(run_for(adm, fv(tenant="globex"), started, release))  # not held by acme
    await asyncio.sleep(0.01)
    assert "globex/f" in started
    release.set()
    await asyncio.gather(*tasks, other)
    assert started.count("acme/f") == 3 and adm.statistics().running == 0


async def test_a_waiter_gives_up_after_its_timeout_naming_what_held_it():
    adm = admission({"acme": TenantLimits(max_concurrency=1)})
    release = asyncio.Event()
    started: list[str] = []
    holder = asyncio.create_task(run_for(adm, fv(), started, release))
    await asyncio.sleep(0)
    with pytest.raises(NoCapacity) as exc:
        async with adm.slot(fv(), 0.05):
            pass
    assert "tenant acme: 1 concurrent executions" in exc.value.message
    release.set()
    await holder
    assert adm.statistics().waiting == 0 and adm.statistics().timed_out == 1


async def test_reserved_concurrency_caps_the_function_and_is_kept_from_the_others():
    adm = admission({"acme": TenantLimits(max_concurrency=3)})
    r = fv(name="r", reserved_concurrency=2)
    adm.function_changed(r.name, r)
    release = asyncio.Event()
    started: list[str] = []
    tasks = [asyncio.create_task(run_for(adm, fv(), started, release)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert started == ["acme/f"]  # only 1 unreserved slot of 3
    tasks += [asyncio.create_task(run_for(adm, r, started, release)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert started.count("acme/r") == 2  # its reservation, not more
    release.set()
    await asyncio.gather(*tasks)
    with pytest.raises(InvalidRequest) as exc:
        adm.check_reservation("acme/g", 2)
    assert "4 concurrent executions" in exc.value.message and "limit of 3" in exc.value.message
    adm.check_reservation("acme/r", 3)  # replacing its own reservation is counted once
    stopped = fv(name="s", reserved_concurrency=0)
    with pytest.raises(LimitExceeded) as exc:
        async with adm.slot(stopped, 1):
            pass
    assert "stopped" in exc.value.message


async def test_when_the_machine_is_saturated_waiters_are_served_across_tenants_by_weight():
    adm = admission({"flood": TenantLimits(weight=1), "quiet": TenantLimits(weight=1)}, node_limit=1)
    order: list[str] = []
    gate = asyncio.Event()

    async def one(tenant, i):
        async with adm.slot(fv(tenant=tenant), 10):
            order.append(f"{tenant}{i}")
            await gate.wait()

    first = asyncio.create_task(one("flood", 0))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(one("flood", i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    waiters.append(asyncio.create_task(one("quiet", 0)))
    await asyncio.sleep(0.01)
    gate.set()  # each finishes as soon as it starts: one at a time through the node's single slot
    await asyncio.gather(first, *waiters)
    # the quiet tenant's request is served right after the flood's oldest waiter, not after all 5
    assert order.index("quiet0") <= 2


async def test_a_heavier_tenant_gets_more_of_a_saturated_machine():
    adm = admission({"heavy": TenantLimits(weight=3), "light": TenantLimits(weight=1)}, node_limit=1)
    order: list[str] = []
    release = asyncio.Event()

    async def one(tenant):
        async with adm.slot(fv(tenant=tenant), 10):
            order.append(tenant)
            await release.wait()

    holder = asyncio.create_task(one("light"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(one(t)) for t in ["heavy"] * 8 + ["light"] * 8]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(holder, *tasks)
    served = order[1:9]  # the first 8 served after the holder
    assert served.count("heavy") >= 5


async def test_a_caller_that_goes_away_while_waiting_leaves_no_slot_taken():
    adm = admission({"acme": TenantLimits(max_concurrency=1)})
    release = asyncio.Event()
    started: list[str] = []
    holder = asyncio.create_task(run_for(adm, fv(), started, release))
    await asyncio.sleep(0)
    gone = asyncio.create_task(run_for(adm, fv(), started, release))
    await asyncio.sleep(0.01)
    gone.cancel()
    release.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert adm.statistics().running == 0 and adm.statistics().waiting == 0
    async with adm.slot(fv(), 0.1):  # the tenant's one slot is free again
        pass
