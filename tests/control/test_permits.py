"""Concurrency permits shared by the gateways of a cluster: one contract for the in-memory
reference and real Redis (the same rule as the per-node check), expiry of a dead gateway's
permits, wake-ups across gateways, and Admission counting a tenant's limit over two gateways."""

import asyncio
import secrets
from datetime import datetime, timezone

import pytest

from mist.control.admission import Admission, MemoryRateLimiter
from mist.control.permits import MemoryPermits, Permit
from mist.control.redispermits import RedisPermits
from mist.core import flow
from mist.errors import NoCapacity
from mist.models import FunctionVersion, qualify
from mist.tenancy.model import TenantLimits

REDIS = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def redis_permits(prefix: str | None = None) -> RedisPermits:
    return RedisPermits(REDIS, prefix=prefix or f"mist-test:{secrets.token_hex(4)}:")


@pytest.fixture(params=["memory", "redis"])
async def permits(request):
    p = MemoryPermits() if request.param == "memory" else redis_permits()
    yield p
    await p.close()


def ask(function="acme/f", reserved=None, tenant="acme"):
    return flow.Ask(tenant, function, reserved)


# held: what runs already (asks); then one more ask with the tenant's limits -> permit or the
# start of the phrase naming the limit
CASES = [
    ("no limits at all", [], ask(), None, 0, "permit"),
    ("the tenant's last slot", [ask()] * 2, ask(), 3, 0, "permit"),
    ("the tenant is full", [ask()] * 3, ask("acme/g"), 3, 0, "tenant acme: 3 concurrent executions"),
    ("reserved functions keep theirs from the others", [ask()], ask("acme/g"), 3, 2,
     "tenant acme: 3 concurrent executions"),
    ("a reserved function may use its reservation", [ask()], ask("acme/r", 2), 3, 2, "permit"),
    ("a reserved function is capped at it", [ask("acme/r", 2)] * 2, ask("acme/r", 2), 10, 2,
     "function acme/r: reserved concurrency 2"),
    ("another tenant is not counted", [ask(tenant="other", function="other/f")] * 3, ask(), 3, 0, "permit"),
]


@pytest.mark.parametrize(("why", "held", "new", "tenant_max", "reserved_total", "expected"), CASES,
                         ids=[c[0] for c in CASES])
async def test_a_permit_is_given_by_the_same_rule_as_the_per_node_check(
        permits, why, held, new, tenant_max, reserved_total, expected):
    for a in held:
        got = await permits.acquire(a, tenant_max=None, reserved_total=0, ttl_s=30)
        assert isinstance(got, Permit)
    got = await permits.acquire(new, tenant_max=tenant_max, reserved_total=reserved_total, ttl_s=30)
    if expected == "permit":
        assert isinstance(got, Permit)
    else:
        assert isinstance(got, str) and got.startswith(expected)  # the limit named, as the node's check does


async def test_a_released_permit_is_free_again_and_wakes_the_tenants_waiters(permits):
    first = await permits.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=30)
    assert isinstance(first, Permit)
    assert isinstance(await permits.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=30), str)
    waiter = asyncio.create_task(permits.wait_released("acme", 5.0))
    await asyncio.sleep(0.1)  # subscribed
    await permits.release(first)
    await asyncio.wait_for(waiter, 2.0)
    assert isinstance(await permits.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=30), Permit)


async def test_the_permits_of_a_gateway_that_died_expire_after_their_ttl():
    clock = Clock()
    memory = MemoryPermits(clock=clock)
    assert isinstance(await memory.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=5), Permit)
    clock.now = 4.9
    assert isinstance(await memory.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=5), str)
    clock.now = 5.1
    assert isinstance(await memory.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=5), Permit)
    prefix = f"mist-test:{secrets.token_hex(4)}:"
    dead, alive = redis_permits(prefix), redis_permits(prefix)
    try:
        assert isinstance(await dead.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=0.3), Permit)
        assert isinstance(await alive.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=30), str)
        await asyncio.sleep(0.4)  # on Redis's clock
        assert isinstance(await alive.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=30), Permit)
    finally:
        await dead.close()
        await alive.close()


async def test_gateways_racing_on_one_redis_never_hold_more_than_the_limit():
    prefix = f"mist-test:{secrets.token_hex(4)}:"
    gateways = [redis_permits(prefix) for _ in range(3)]
    try:
        got = await asyncio.gather(*(gateways[i % 3].acquire(ask(), tenant_max=4, reserved_total=0, ttl_s=30)
                                     for i in range(30)))
        assert sum(isinstance(g, Permit) for g in got) == 4
    finally:
        for g in gateways:
            await g.close()


async def test_an_unreachable_redis_grants_permits_and_counts_them():
    p = RedisPermits("redis://127.0.0.1:1/0")
    try:
        got = await p.acquire(ask(), tenant_max=1, reserved_total=0, ttl_s=30)
        assert isinstance(got, Permit)
        await p.release(got)
        assert p.statistics().unreachable == 1
    finally:
        await p.close()


def fv(tenant="acme", name="f", timeout=30.0):
    return FunctionVersion(qualify(tenant, name), 1, "main.handler", 128, timeout, 1, {}, "0" * 64, 1, None,
                           datetime.now(timezone.utc))


async def test_a_tenants_concurrency_limit_holds_over_two_gateways():
    limits = {"acme": TenantLimits(max_concurrency=2)}
    prefix = f"mist-test:{secrets.token_hex(4)}:"
    shared = [redis_permits(prefix), redis_permits(prefix)]
    a, b = (Admission(lambda t: limits.get(t, TenantLimits()), rates=MemoryRateLimiter(), permits=p)
            for p in shared)
    running: list[str] = []
    most = 0
    release = asyncio.Event()

    async def run(adm, label):
        nonlocal most
        async with adm.slot(fv(), 5.0):
            running.append(label)
            most = max(most, len(running))
            await release.wait()
            running.remove(label)

    try:
        first = [asyncio.create_task(run(a, "a1")), asyncio.create_task(run(b, "b1"))]
        await asyncio.sleep(0.1)
        third = asyncio.create_task(run(a, "a2"))  # each gateway runs only one: the cluster is full
        await asyncio.sleep(0.3)
        assert sorted(running) == ["a1", "b1"] and not third.done()
        assert a.statistics().running == 1  # the waiter holds no slot of its node meanwhile
        release.set()
        await asyncio.wait_for(asyncio.gather(*first, third), 3.0)
        assert most == 2
        # other tenants are not held by acme's limit, and acme's waiter gives up at its timeout
        hold = asyncio.Event()

        async def hold_one(adm):
            async with adm.slot(fv(), 5.0):
                await hold.wait()

        holders = [asyncio.create_task(hold_one(a)), asyncio.create_task(hold_one(b))]
        await asyncio.sleep(0.1)
        async with b.slot(fv(tenant="other"), 1.0):
            pass
        with pytest.raises(NoCapacity) as exc:
            async with a.slot(fv(timeout=0.5), 0.5):
                pass
        assert "tenant acme: 2 concurrent executions over the cluster" in exc.value.message
        hold.set()
        await asyncio.gather(*holders)
    finally:
        for p in shared:
            await p.close()
