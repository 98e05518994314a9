"""The buffered writers of invocation records and audit entries: what is noted is written soon
after (in batches), and an idle server's writers sleep instead of waking to find nothing."""

import asyncio
import time

from mist.control.records import InvocationLog
from mist.models import InvocationRecord
from mist.tenancy.audit import AuditLog
from mist.tenancy.model import AuditEntry
from mist.testing.stores import MemoryStore
from mist.testing.tenancy import MemoryTenantStore


def record(i: int) -> InvocationRecord:
    return InvocationRecord(
        id=f"inv-{i}", function="hello", version=1, trigger="api", status="succeeded", error_type=None,
        error_message=None, cold_start=False, init_ms=0.0, duration_ms=2.5, billed_ms=3, memory_mb=128,
        max_memory_used_mb=20, started_at=1000.0 + i, ended_at=1000.01 + i,
    )


def entry(i: int) -> AuditEntry:
    return AuditEntry(ts=1000.0 + i, tenant="default", actor="k1", role="admin", action="POST",
                      resource="/v1/functions", status=201, source_ip="127.0.0.1")


class CountingLog(InvocationLog):
    flushes = 0

    async def _flush(self) -> None:
        self.flushes += 1
        await super()._flush()


async def eventually(check, timeout: float = 2.0) -> float:
    """Seconds until check() holds (fails the test after timeout)."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "not written in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


async def test_an_idle_invocation_log_does_not_wake_and_the_first_record_after_idle_is_written_soon():
    store = MemoryStore()
    log = CountingLog(store, flush_interval=0.01)
    await log.start()
    try:
        await asyncio.sleep(0.3)  # 30 intervals with nothing to write
        assert log.flushes == 0
        log.add(record(1), [])
        assert await eventually(lambda: store.get_invocation("inv-1") is not None) < 1.0
        assert log.statistics().pending == 0 and log.statistics().written == 1
        flushes = log.flushes
        await asyncio.sleep(0.2)
        assert log.flushes == flushes  # idle again: asleep
    finally:
        await log.stop()


async def test_records_are_written_in_one_batch_per_interval_and_a_full_batch_at_once():
    store = MemoryStore()
    log = CountingLog(store, flush_interval=1.0, max_batch=5)
    await log.start()
    try:
        for i in range(3):
            log.add(record(i), [])
        await eventually(lambda: log.statistics().written == 3)
        assert log.flushes == 1  # the three together, one interval after the first
        for i in range(3, 8):  # a full batch does not wait for the interval
            log.add(record(i), [])
        assert await eventually(lambda: log.statistics().written == 8) < 0.5  # not the 1 s interval
    finally:
        await log.stop()


async def test_a_record_added_just_before_stop_is_written():
    store = MemoryStore()
    log = InvocationLog(store, flush_interval=5.0)
    await log.start()
    log.add(record(1), [])
    await log.stop()
    assert store.get_invocation("inv-1") is not None


async def test_the_audit_log_writes_soon_after_a_note_and_sleeps_while_nothing_happens():
    store = MemoryTenantStore()
    audit = AuditLog(store, flush_interval=0.01)
    calls = 0
    add = store.add_audit

    def counting(entries):
        nonlocal calls
        calls += 1
        add(entries)

    store.add_audit = counting  # type: ignore[method-assign]
    flushes = 0
    flush = audit.flush

    async def counting_flush() -> None:
        nonlocal flushes
        flushes += 1
        await flush()

    audit.flush = counting_flush  # type: ignore[method-assign]
    await audit.start()
    try:
        await asyncio.sleep(0.3)
        assert flushes == 0
        audit.note(entry(1))
        audit.note(entry(2))
        assert await eventually(lambda: audit.statistics().written == 2) < 1.0
        assert calls == 1
        assert [e.ts for e in await audit.query(tenant="default")] == [1002.0, 1001.0]
        before = flushes
        await asyncio.sleep(0.2)
        assert flushes == before
    finally:
        await audit.stop()
