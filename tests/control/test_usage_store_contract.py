"""The UsageStore contract (mist/metering/store.py), against SQLite, PostgreSQL and the fake."""

from datetime import datetime, timezone
from decimal import Decimal

from mist.control.store import NewEvent, Settlement
from mist.core.pricing import Usage
from mist.metering.plans import TenantBilling
from mist.metering.usage import INVOCATION, UsageRecord, from_span
from mist.worker.types import ProvisionedSpan

DAY = 86_400
T0 = datetime(2026, 11, 26, tzinfo=timezone.utc).timestamp()  # midnight UTC


def rec(rid, *, tenant="acme", function="resize", started=T0 + 3600, billed_ms=10, memory_mb=256, cold=False,
        outcome="succeeded"):  # fmt: skip
    start_us = round(started * 1_000_000)
    return UsageRecord(rid, INVOCATION, tenant, function, 1, "api", start_us, start_us + billed_ms * 1000, 0,
                       billed_ms * 1000 - 400, billed_ms, memory_mb, 1, cold, outcome,
                       None if outcome == "succeeded" else "E")  # fmt: skip


def test_a_record_is_stored_once_however_often_it_is_added(store):
    assert store.add_usage([rec("a"), rec("b")]) == 2
    assert store.add_usage([rec("a"), rec("c")]) == 1
    assert store.add_usage([]) == 0
    assert [r.id for r in store.usage_records(None, 0, T0 * 2)] == ["a", "b", "c"]
    assert store.get_usage("a") == rec("a") and store.get_usage("zz") is None


def test_totals_per_function_day_and_hour(store):
    store.add_usage([
        rec("1", function="a", started=T0 + 10, cold=True), rec("2", function="a", started=T0 + 3700, outcome="failed"),
        rec("3", function="b", started=T0 + DAY + 5, billed_ms=1000, memory_mb=1024),
        rec("4", tenant="other", function="a", started=T0 + 20),
        *from_span(ProvisionedSpan("b", 1, "acme", 512, 2, int((T0 + 1800) * 1000), int((T0 + 5400) * 1000))),
    ])  # fmt: skip
    by_function = store.usage_rows("acme", T0, T0 + 2 * DAY, "function")
    assert [(r.key, r.requests, r.failed, r.cold_starts, r.billed_ms, r.mb_ms, r.provisioned_mb_ms)
            for r in by_function] == [  # fmt: skip
        ("a", 2, 1, 1, 20, 2 * 2560, 0),
        ("b", 1, 0, 0, 1000, 1024 * 1000, 512 * 2 * 3_600_000),
    ]
    by_day = store.usage_rows("acme", T0, T0 + 2 * DAY, "day")
    assert [(r.key, r.requests) for r in by_day] == [("2026-11-26", 2), ("2026-11-27", 1)]
    by_hour = store.usage_rows(None, T0, T0 + DAY, "hour")
    assert [(r.tenant, r.key, r.requests, r.provisioned_mb_ms) for r in by_hour] == [
        ("acme", "2026-11-26T00:00Z", 1, 512 * 2 * 1_800_000),
        ("acme", "2026-11-26T01:00Z", 1, 512 * 2 * 1_800_000),
        ("other", "2026-11-26T00:00Z", 1, 0),
    ]


def test_the_period_is_from_included_to_excluded(store):
    store.add_usage([rec("early", started=T0 - 0.001), rec("first", started=T0), rec("last", started=T0 + DAY - 0.001),
                     rec("next", started=T0 + DAY)])  # fmt: skip
    assert [r.id for r in store.usage_records(None, T0, T0 + DAY)] == ["first", "last"]
    assert store.usage_rows(None, T0, T0 + DAY, "function")[0].requests == 2
    assert store.tenant_totals(T0, T0 + DAY) == {"acme": Usage(2, 2 * 2560, 0)}


def test_records_are_paged_by_id(store):
    store.add_usage([rec(f"r{i:03d}") for i in range(25)])
    first = store.usage_records("acme", 0, T0 * 2, limit=10)
    rest = store.usage_records("acme", 0, T0 * 2, after=first[-1].id, limit=100)
    assert [r.id for r in first + rest] == [f"r{i:03d}" for i in range(25)]
    assert store.usage_records("nobody", 0, T0 * 2) == []


def test_tenant_totals_separate_compute_from_provisioned_time(store):
    store.add_usage([rec("x", billed_ms=100, memory_mb=128),
                     *from_span(ProvisionedSpan("f", 1, "acme", 128, 1, int(T0 * 1000), int(T0 * 1000) + 60_000))])
    assert store.tenant_totals(0, T0 * 2) == {"acme": Usage(requests=1, mb_ms=12_800, provisioned_mb_ms=7_680_000)}


def test_tenant_billing_settings_are_kept_and_replaced(store):
    assert store.get_tenant_billing("acme") is None and store.list_tenant_billing() == []
    store.set_tenant_billing(TenantBilling("acme", "pro", Decimal("250.50")), T0)
    store.set_tenant_billing(TenantBilling("zeta", None, None), T0)
    store.set_tenant_billing(TenantBilling("acme", None, Decimal("0.000001")), T0 + 1)
    assert store.get_tenant_billing("acme") == TenantBilling("acme", None, Decimal("0.000001"))
    assert [b.tenant for b in store.list_tenant_billing()] == ["acme", "zeta"]


def test_an_attempt_is_billed_with_its_settlement_and_only_if_the_settlement_applies(store):
    store.enqueue([NewEvent("ev1", "resize", None, b"{}", "event")], T0)
    (claimed,) = store.claim("me", "resize", T0, limit=1, lease_s=30)

    def settlement(owner):
        return Settlement(event_id="ev1", owner=owner, attempt=claimed.attempt, started_at=T0, ended_at=T0 + 1,
                          outcome="succeeded", error_type=None, error_message=None, record_id="ev1-1", version=1,
                          status="succeeded", due_at=None, function_errors=0, usage=rec("ev1-1", started=T0))

    assert store.settle([settlement("thief")], T0 + 1) == [False]  # lost the lease: not billed
    assert store.get_usage("ev1-1") is None
    assert store.settle([settlement("me")], T0 + 1) == [True]
    assert store.get_usage("ev1-1") == rec("ev1-1", started=T0)
    assert store.get_event("ev1").attempts[0].outcome == "succeeded"  # the same transaction


def test_a_large_batch_with_repeats_is_stored_whole_and_once(store):
    first = [rec(f"b{i:05d}") for i in range(700)]
    assert store.add_usage(first) == 700
    batch = [*first[600:], *(rec(f"b{i:05d}") for i in range(700, 1901))]  # 100 repeats, then 1,201 new
    assert store.add_usage(batch) == 1201
    assert len(store.usage_records(None, 0, T0 * 2, limit=10_000)) == 1901
