"""--max-instances caps a function's instances; --min-instances keeps some loaded at all times."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from mist.worker import Worker
from tests.worker.conftest import call, value, worker_config

pytestmark = pytest.mark.sandbox

SLOW = """
import time
def handler(event, context):
    time.sleep(0.3)
    return event
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def instances_of(worker: Worker, name: str) -> int:
    return sum(f.instances for f in worker.statistics().functions if f.name == name)


async def test_max_instances_queues_calls_on_the_instances_it_allows(worker, function):
    spec = function(SLOW, max_instances=1)
    t0 = time.monotonic()
    results = await asyncio.gather(*(call(worker, spec, i) for i in range(3)))
    took = time.monotonic() - t0
    assert [value(r) for r in results] == [0, 1, 2]
    assert instances_of(worker, "fn") == 1
    assert took >= 0.85  # one after the other, on the one instance allowed


async def test_min_instances_are_loaded_before_any_request_and_their_calls_are_warm(tmp_path, function):
    clock = Clock()
    w = Worker(worker_config(tmp_path, keepalive_s=600), clock=clock)
    await w.start()
    try:
        spec = function("def handler(event, context):\n    return event\n", min_instances=2)
        assert await w.provision(spec) == 2
        assert instances_of(w, "fn") == 2
        assert [f.provisioned for f in w.statistics().functions] == [2]  # what a cluster worker reports
        first = await call(w, spec, "x")
        assert value(first) == "x" and first.cold_start is False and first.init_ms == 0.0
        clock.now += 10_000  # long past the keep-alive
        assert w.scale_tick().reclaimed == 0
        assert instances_of(w, "fn") == 2
        # a new version without a minimum: the old provisioned instances may go
        newer = dataclasses.replace(function("def handler(event, context):\n    return 1\n"))
        await w.retire("fn", keep_version=newer.version)
        await w.provision(newer)
        assert instances_of(w, "fn") == 0
        assert [f.provisioned for f in w.statistics().functions] == []
    finally:
        await w.stop()


async def test_a_provisioned_instance_that_dies_is_replaced_by_the_reaper(tmp_path, function):
    w = Worker(worker_config(tmp_path, autoscale_tick_s=0.2))
    await w.start()
    try:
        spec = function("import os\ndef handler(event, context):\n    os._exit(3)\n", min_instances=1)
        await w.provision(spec)
        crashed = await call(w, spec)
        assert crashed.error["errorType"] == "Runtime.ExitError"
        for _ in range(50):
            if instances_of(w, "fn") == 1:
                break
            await asyncio.sleep(0.1)
        assert instances_of(w, "fn") == 1
    finally:
        await w.stop()
