"""Tenants share the CPU by weight, whatever their number of instances: each instance's cgroup
cpu.shares is its tenant's weight split over the tenant's instances (real cgroups)."""

import asyncio

import pytest

from mist.worker import Worker
from tests.worker.conftest import call, worker_config

pytestmark = pytest.mark.sandbox

SLEEP = "import time\ndef handler(event, context):\n    time.sleep(0.3)\n    return 1\n"


def shares_of(worker: Worker, tenant_prefix: str) -> list[int]:
    out = []
    for sb in worker._functions.values():  # noqa: SLF001 - reading the cgroup files the kernel uses
        if sb.spec is not None and sb.spec.function_name.startswith(tenant_prefix):
            out.append(int((sb.cgroups.dirs["cpu"] / "cpu.shares").read_text()))
    return out


async def test_a_tenant_with_many_instances_gets_the_same_cpu_as_one_with_one_and_weights_count(tmp_path, function):
    w = Worker(worker_config(tmp_path, prewarm=0))
    weights = {"busy": 1, "quiet": 1}
    w.tenant_weight = lambda t: weights.get(t, 1)
    await w.start()
    try:
        busy = function(SLEEP, name="busy/f")
        quiet = function(SLEEP, name="quiet/g")
        await asyncio.gather(*(call(w, busy) for _ in range(4)), call(w, quiet))
        w.rebalance_cpu()
        busy_shares, quiet_shares = shares_of(w, "busy/"), shares_of(w, "quiet/")
        assert len(busy_shares) == 4 and len(quiet_shares) == 1
        assert abs(sum(busy_shares) - sum(quiet_shares)) <= 4  # rounding of 4 parts
        weights["quiet"] = 3
        assert w.rebalance_cpu() == 1  # only what changed is written
        assert sum(shares_of(w, "quiet/")) == pytest.approx(3 * sum(shares_of(w, "busy/")), rel=0.01)
    finally:
        await w.stop()
