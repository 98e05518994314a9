"""Provisioned (min) instances are reported for billing while they are ready, and only then."""

from __future__ import annotations

import pytest

from mist.worker import Worker
from mist.worker.policy import OpenSpan, accrue
from mist.worker.types import ProvisionedSpan
from tests.worker.conftest import call, worker_config


@pytest.mark.parametrize(
    ("open_span", "instances", "now", "closed", "opened"),
    [
        (None, 2, 1_000, None, OpenSpan(2, 1_000)),  # provisioning starts: nothing to bill yet
        (None, 0, 1_000, None, None),  # nothing provisioned, nothing open
        (OpenSpan(2, 1_000), 2, 3_000, (2, 1_000, 3_000), OpenSpan(2, 3_000)),  # a tick bills what accrued
        (OpenSpan(2, 1_000), 1, 3_000, (2, 1_000, 3_000), OpenSpan(1, 3_000)),  # one instance died
        (OpenSpan(1, 3_000), 0, 5_000, (1, 3_000, 5_000), None),  # provisioning ends
        (OpenSpan(2, 3_000), 1, 3_000, None, OpenSpan(1, 3_000)),  # changed within the ms: no empty span
        (OpenSpan(2, 5_000), 2, 4_000, None, OpenSpan(2, 5_000)),  # a wall clock set back bills nothing twice
    ],
)
def test_provisioned_time_is_cut_into_spans_that_tile_it(open_span, instances, now, closed, opened):
    assert accrue(open_span, instances, now) == (closed, opened)


class Wall:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


DIES = """
import os
def handler(event, context):
    if event == "die":
        os._exit(3)
    return event
"""


@pytest.mark.sandbox
async def test_a_version_is_billed_for_its_ready_provisioned_instances_until_provisioning_ends(tmp_path, function):
    wall = Wall()
    w = Worker(worker_config(tmp_path, autoscale_tick_s=3600.0), wall=wall)  # ticks by hand only
    spans: list[ProvisionedSpan] = []
    w.on_provisioned = spans.append
    await w.start()
    try:
        spec = function(DIES, min_instances=2, tenant="acme", memory_mb=256)
        assert await w.provision(spec) == 2
        wall.now += 10
        w.bill_provisioned()
        await call(w, spec, "die")  # one instance is gone: from now on one is billed
        wall.now += 5
        w.bill_provisioned()
        await w.provision(function(DIES))  # a new version without min instances: provisioning ends
        wall.now += 60
        w.bill_provisioned()
        assert [(s.tenant, s.memory_mb, s.instances, s.start_ms, s.end_ms) for s in spans] == [
            ("acme", 256, 2, 1_000_000, 1_010_000), ("acme", 256, 1, 1_010_000, 1_015_000)]
    finally:
        await w.stop()
    assert len(spans) == 2  # nothing after provisioning ended


@pytest.mark.sandbox
async def test_stopping_the_worker_ends_the_provisioned_time(tmp_path, function):
    wall = Wall()
    w = Worker(worker_config(tmp_path, autoscale_tick_s=3600.0), wall=wall)
    spans: list[ProvisionedSpan] = []
    w.on_provisioned = spans.append
    await w.start()
    await w.provision(function(DIES, min_instances=1))
    wall.now += 7.5
    await w.stop()
    assert [(s.instances, s.start_ms, s.end_ms, s.tenant) for s in spans] == [(1, 1_000_000, 1_007_500, "default")]


@pytest.mark.sandbox
async def test_a_draining_worker_stops_provisioning_and_billing_at_once_but_keeps_serving(tmp_path, function):
    """A cluster worker that drains hands its provisioned functions to the cluster (another
    worker starts them): its own provisioned time ends when the drain starts, not when it leaves."""
    wall = Wall()
    w = Worker(worker_config(tmp_path, autoscale_tick_s=3600.0), wall=wall)
    spans: list[ProvisionedSpan] = []
    w.on_provisioned = spans.append
    await w.start()
    try:
        spec = function(DIES, min_instances=1)
        await w.provision(spec)
        wall.now += 4
        assert w.stop_provisioning() == [spec.function_name]
        wall.now += 30
        w.bill_provisioned()
        assert (await call(w, spec, "still here")).ok  # in-flight and later calls still run meanwhile
        assert [f.provisioned for f in w.statistics().functions if f.name == spec.function_name] == [0]
    finally:
        await w.stop()
    assert [(s.instances, s.start_ms, s.end_ms) for s in spans] == [(1, 1_000_000, 1_004_000)]
