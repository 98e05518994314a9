"""Metering on the invocation path, over the in-memory store and a fake worker: what is billed
for sync and async attempts, spend caps, months, provisioned spans, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from mist.control.batching import SerialWriter
from mist.control.dispatcher import Dispatcher, DispatcherConfig
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import LayerStore
from mist.control.records import InvocationLog
from mist.control.store import NewVersion
from mist.core.retry import Backoff
from mist.errors import NoCapacity, SpendCapReached
from mist.metering.journal import Journal
from mist.metering.ledger import Ledger
from mist.metering.meter import Meter
from mist.metering.plans import BillingConfig, TenantBilling
from mist.metering.usage import month_bounds
from mist.models import qualify
from mist.testing.stores import MemoryStore
from mist.testing.worker import FakeWorker, fails
from mist.worker.types import InvokeResult, ProvisionedSpan

FAST = DispatcherConfig(backoff=Backoff(base_s=0.01, factor=2.0, cap_s=0.05), poll_s=0.05, heartbeat_s=0.1,
                        lease_s=0.5, stop_grace_s=0.5)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def timed(init_ms: float, duration_ms: float):
    def behaviour(spec, payload):
        now = time.time()
        return InvokeResult(ok=True, payload=payload, init_ms=init_ms, duration_ms=duration_ms, started_at=now,
                            ended_at=now + duration_ms / 1000)

    return behaviour


@dataclasses.dataclass
class Platform:
    tmp_path: object
    store: MemoryStore
    worker: FakeWorker
    functions: FunctionService
    invocations: InvocationService
    events: EventService
    meter: Meter
    writer: SerialWriter
    clock: Clock

    async def version(self, tenant: str = "default"):
        fv = await self.functions.resolve("hello")  # the same function, as if it were `tenant`'s
        return dataclasses.replace(fv, name=qualify(tenant, fv.local_name))

    async def ledger(self):
        await self.meter.ledger.flush()
        return {r.id: r for r in self.store.usage_records(None, 0, 4e9, limit=100_000)}

    async def event_until(self, event_id: str, done):
        """The event's view once `done(view)` holds (polled; the dispatcher runs on real time)."""
        for _ in range(500):
            view = await self.events.get(event_id)
            if done(view):
                return view
            await asyncio.sleep(0.01)
        raise AssertionError(f"event {event_id} did not get there: {view}")

    async def new_meter(self) -> Meter:
        """A second mist on the same data dir and database."""
        meter = Meter(Ledger(self.store, Journal(self.tmp_path / "journal"), self.writer), self.store,
                      self.meter.config, wall=self.clock)  # fmt: skip
        await meter.start()
        return meter


@pytest.fixture
async def mist(tmp_path):
    store = MemoryStore()
    worker = FakeWorker(behaviour=timed(0.0, 2.5))
    clock = Clock()
    writer = SerialWriter()
    records = InvocationLog(store, flush_interval=0.01)
    await records.start()
    meter = Meter(Ledger(store, Journal(tmp_path / "journal"), writer, interval_s=3600), store, BillingConfig(),
                  wall=clock)  # fmt: skip
    await meter.start()
    functions = FunctionService(tmp_path, store, LayerStore(tmp_path / "layers"), worker.retire)
    store.create_version(NewVersion(name="hello", handler="main.handler", memory_mb=512, timeout_s=5.0, concurrency=1,
                                    env={}, code_sha256="a" * 64, code_size=1, layer_sha256=None),
                         datetime.now(timezone.utc))  # fmt: skip
    invocations = InvocationService(functions, worker, records, meter=meter)
    events = EventService(functions, store, store, writer)
    p = Platform(tmp_path, store, worker, functions, invocations, events, meter, writer, clock)
    yield p
    await records.stop()
    await meter.stop()
    writer.close()


async def test_a_synchronous_attempt_is_in_the_journal_before_invoke_returns(mist):
    mist.worker.behaviour = timed(0.4, 11.3)
    out = await mist.invocations.invoke(await mist.version("acme"), b"{}", trigger="api")
    (path, found), = Journal(mist.tmp_path / "journal").recover()  # what a crash right now would leave
    assert [r.id for r in found] == [out.invocation_id]
    r = (await mist.ledger())[out.invocation_id]
    assert (r.tenant, r.function, r.version, r.trigger, r.memory_mb, r.billed_ms, r.mb_ms, r.outcome) == (
        "acme", "hello", 1, "api", 512, 12, 512 * 12, "succeeded")


async def test_an_answer_goes_out_after_the_usage_is_journaled_and_before_the_record_is_made(mist):
    """The gateway answers from `invoke`'s `answer` callback: the usage is in the journal by
    then (a client holding an answer is billed, whatever crashes next), and the record follows
    at once, even when answering failed."""
    records = mist.invocations._records
    fv = await mist.version("acme")
    seen = []

    def answer(out):
        (_, found), = Journal(mist.tmp_path / "journal").recover()
        seen.append(([r.id for r in found], records._pending.get(out.invocation_id)))

    out = await mist.invocations.invoke(fv, b"{}", trigger="api", answer=answer)
    assert seen == [([out.invocation_id], None)]
    assert (await records.get(out.invocation_id))[0].status == "succeeded"

    def broken(out):
        raise ConnectionResetError("the client went away")

    mist.worker.behaviour = fails("ValueError", "bad")
    with pytest.raises(ConnectionResetError):
        await mist.invocations.invoke(fv, b"{}", trigger="api", answer=broken)
    failed = [r for r in await records.list(fv.name, 10) if r.status == "failed"]
    assert len(failed) == 1 and failed[0].id in await mist.ledger()


async def test_function_errors_are_billed_and_platform_errors_are_not(mist):
    mist.worker.behaviour = fails("ValueError", "bad")
    failed = await mist.invocations.invoke(await mist.version(), b"{}", trigger="api")

    def no_capacity(spec, payload):
        raise NoCapacity("full")

    mist.worker.behaviour = no_capacity
    with pytest.raises(NoCapacity) as refused:
        await mist.invocations.invoke(await mist.version(), b"{}", trigger="api")
    ledger = await mist.ledger()
    assert ledger[failed.invocation_id].outcome == "failed" and ledger[failed.invocation_id].requests == 1
    assert refused.value.invocation_id not in ledger  # nothing ran: nothing billed (its record says "error")


async def test_each_asynchronous_attempt_is_billed_with_its_settlement(mist):
    ran = {"n": 0}

    def fails_twice(spec, payload):
        ran["n"] += 1
        if ran["n"] <= 2:
            return fails("ValueError", "again")(spec, payload)
        return timed(0.0, 4.2)(spec, payload)

    mist.worker.behaviour = fails_twice
    d = Dispatcher(mist.store, mist.store, mist.events, mist.functions, mist.invocations, mist.writer, FAST)
    await d.start()
    event_id = await mist.events.enqueue("hello", b"{}", trigger="event")
    await mist.event_until(event_id, lambda v: v.status == "succeeded")
    await d.stop()
    # in the store with the settlement, without waiting for the journal's import
    billed = {r.id: r for r in mist.store.usage_records(None, 0, 4e9)}
    assert sorted(billed) == [f"{event_id}-1", f"{event_id}-2", f"{event_id}-3"]
    assert [billed[f"{event_id}-{n}"].outcome for n in (1, 2, 3)] == ["failed", "failed", "succeeded"]
    assert billed[f"{event_id}-3"].billed_ms == 5 and billed[f"{event_id}-3"].trigger == "event"
    assert mist.meter.spend("default").usage.requests == 3


async def test_a_tenant_at_its_cap_is_refused_before_anything_runs_and_others_are_not(mist):
    await mist.meter.ledger.flush()
    mist.meter.configure(TenantBilling("acme", monthly_spend_cap=Decimal("0")))
    calls = len(mist.worker.calls)
    with pytest.raises(SpendCapReached, match=r"tenant 'acme' reached its monthly spend cap of 0.00 USD for \d{4}-\d\d"):
        await mist.invocations.invoke(await mist.version("acme"), b"{}", trigger="api")
    assert len(mist.worker.calls) == calls
    await mist.invocations.invoke(await mist.version("other"), b"{}", trigger="api")
    assert [r.tenant for r in (await mist.ledger()).values()] == ["other"]
    assert mist.meter.statistics().refused == 1 and mist.meter.statistics().refusing == ("acme",)


async def test_the_cap_is_reached_by_spend_and_raising_it_serves_the_tenant_again(mist):
    plan = BillingConfig().plans["standard"]
    cheap = dataclasses.replace(plan, name="standard", free_requests=0, free_gb_s=0, per_million_requests=Decimal(100_000))
    mist.meter.config = BillingConfig({"standard": cheap})  # 0.10 per request
    mist.meter.configure(TenantBilling("acme", monthly_spend_cap=Decimal("0.30")))
    fv = await mist.version("acme")
    for _ in range(3):
        await mist.invocations.invoke(fv, b"{}", trigger="api")
    with pytest.raises(SpendCapReached, match=r"0.30 USD .*\(0.30 USD so far\)"):
        await mist.invocations.invoke(fv, b"{}", trigger="api")
    mist.meter.configure(TenantBilling("acme", monthly_spend_cap=Decimal("0.40")))
    await mist.invocations.invoke(fv, b"{}", trigger="api")
    assert mist.meter.spend("acme").spent_micros == 400_000 and mist.meter.spend("acme").reached


async def test_an_asynchronous_event_of_a_capped_tenant_waits_unbilled_until_the_cap_is_raised(mist):
    mist.meter.configure(TenantBilling("default", monthly_spend_cap=Decimal("0")))
    d = Dispatcher(mist.store, mist.store, mist.events, mist.functions, mist.invocations, mist.writer, FAST)
    await d.start()
    event_id = await mist.events.enqueue("hello", b"{}", trigger="event")
    view = await mist.event_until(event_id, lambda v: len(v.attempts) >= 2)
    assert view.status in ("queued", "running") and view.attempts[0].error_type == "SpendCapReached"
    assert mist.worker.calls == [] and mist.store.usage_records(None, 0, 4e9) == []
    mist.meter.configure(TenantBilling("default", monthly_spend_cap=None))
    view = await mist.event_until(event_id, lambda v: v.status == "succeeded")
    await d.stop()
    billed = mist.store.usage_records(None, 0, 4e9)
    assert view.status == "succeeded" and [r.id for r in billed] == [f"{event_id}-{len(view.attempts)}"]


async def test_a_new_month_starts_from_zero_and_serves_a_refused_tenant_again(mist):
    cheap = dataclasses.replace(BillingConfig().plans["standard"], free_requests=0, per_million_requests=Decimal(10**6))
    mist.meter.config = BillingConfig({"standard": cheap})
    mist.meter.configure(TenantBilling("acme", monthly_spend_cap=Decimal("1")))
    fv = await mist.version("acme")
    await mist.invocations.invoke(fv, b"{}", trigger="api")
    with pytest.raises(SpendCapReached):
        await mist.invocations.invoke(fv, b"{}", trigger="api")
    month = mist.meter.spend("acme").month
    mist.clock.offset = month_bounds(month)[1] - time.time() + 1  # one second into next month
    mist.meter.tick()
    assert mist.meter.spend("acme").usage.requests == 0 and mist.meter.spend("acme").month != month
    mist.clock.offset = 0  # invocations are timed by the (fake) worker in real time: last month's again
    await mist.invocations.invoke(fv, b"{}", trigger="api")  # served: its month is closed
    assert mist.meter.spend("acme").usage.requests == 0  # an attempt that started last month is last month's


async def test_provisioned_spans_are_billed_to_their_tenant(mist):
    start = int(time.time() * 1000)
    mist.meter.provisioned(ProvisionedSpan("hello", 1, "acme", 256, 2, start, start + 2_000))
    ledger = await mist.ledger()
    assert [(r.kind, r.tenant, r.mb_ms) for r in ledger.values()] == [("provisioned", "acme", 256 * 2 * 2_000)]
    assert mist.meter.spend("acme").usage.provisioned_mb_ms == 256 * 2 * 2_000


async def test_a_restarted_meter_knows_the_month_so_far_and_the_caps(mist):
    mist.meter.configure(TenantBilling("acme", monthly_spend_cap=Decimal("5")))
    mist.store.set_tenant_billing(TenantBilling("acme", monthly_spend_cap=Decimal("5")), time.time())
    for _ in range(3):
        await mist.invocations.invoke(await mist.version("acme"), b"{}", trigger="api")
    successor = await mist.new_meter()  # the journal of the first run is imported first
    try:
        spend = successor.spend("acme")
        assert spend.usage.requests == 3 and spend.cap_micros == 5_000_000
    finally:
        await successor.stop()


async def test_a_cap_set_through_another_process_of_a_cluster_is_followed_and_usage_kept(mist):
    for _ in range(2):
        await mist.invocations.invoke(await mist.version("acme"), b"{}", trigger="api")
    mist.store.set_tenant_billing(TenantBilling("acme", monthly_spend_cap=Decimal("0")), time.time())  # by another
    await mist.invocations.invoke(await mist.version("acme"), b"{}", trigger="api")  # not yet followed: served
    assert await mist.meter.follow() == ["acme"]
    with pytest.raises(SpendCapReached):
        await mist.invocations.invoke(await mist.version("acme"), b"{}", trigger="api")
    assert mist.meter.spend("acme").usage.requests == 3
    assert await mist.meter.follow() == []


async def test_a_cap_reached_through_another_process_is_enforced_once_its_usage_is_imported(mist):
    cheap = dataclasses.replace(BillingConfig().plans["standard"], free_requests=0, per_million_requests=Decimal(10**5))
    mist.meter.config = BillingConfig({"standard": cheap})  # 0.10 per request
    cap = TenantBilling("acme", monthly_spend_cap=Decimal("0.30"))
    mist.meter.configure(cap)
    other = Meter(Ledger(mist.store, Journal(mist.tmp_path / "other-journal"), mist.writer, interval_s=3600),
                  mist.store, mist.meter.config, wall=mist.clock)  # another process of the cluster  # fmt: skip
    await other.start()
    try:
        other.configure(cap)
        fv = await mist.version("acme")
        for _ in range(3):
            await mist.invocations.invoke(fv, b"{}", trigger="api")
        assert await mist.meter.refresh() == []  # its own records, not imported yet, counted once
        assert mist.meter.spend("acme").usage.requests == 3 and mist.meter.spend("acme").reached
        await other.refresh()
        other.check(fv)  # the other process has not seen them: still in this one's journal
        await mist.meter.ledger.flush()  # the import (every second in mist up)
        assert await mist.meter.refresh() == []  # now in the table, and no longer pending: still 3
        assert await other.refresh() == ["acme"]
        with pytest.raises(SpendCapReached, match=r"0.30 USD so far"):
            other.check(fv)
        assert other.statistics().refreshes == 2 and other.statistics().refusing == ("acme",)
    finally:
        await other.stop()
