"""Random usage, through the real ledger (journal -> SQLite) and the billing service, against an
independent reference computed from the raw measurements in Decimal: the totals agree to the
micro-unit, and nothing is counted twice however often records are replayed."""

from __future__ import annotations

import random
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, getcontext

import pytest

from mist.control.batching import SerialWriter
from mist.control.sqlstore import SqlStore
from mist.core.billing import billed_ms
from mist.metering.journal import Journal
from mist.metering.ledger import Ledger
from mist.metering.meter import Meter
from mist.metering.plans import TenantBilling, parse
from mist.metering.service import BillingService
from mist.metering.usage import from_invocation, from_span, month_bounds
from mist.models import InvocationRecord
from mist.worker.types import ProvisionedSpan

MONTH = "2026-11"
START, END = month_bounds(MONTH)
PLANS = parse({"plans": {
    "standard": {},
    "odd": {"per_million_requests": "0.37", "per_gb_s": "0.0000123457", "per_provisioned_gb_s": "0.0000031",
            "free_requests": 1000, "free_gb_s": 3},
    "none-free": {"per_million_requests": "1.11", "per_gb_s": "0.0001", "free_requests": 0, "free_gb_s": 0},
}}, "test")  # fmt: skip
TENANTS = {"acme": "standard", "beta": "odd", "gamma": "none-free"}


def raw_invocations(rng: random.Random, n: int) -> list[tuple[str, InvocationRecord]]:
    out = []
    for i in range(n):
        started = rng.uniform(START, END - 60)
        init = rng.choice([0.0, 0.0, 0.0, rng.uniform(0.1, 900.0)])
        duration = rng.choice([rng.uniform(0.0, 2.0), rng.uniform(0.0, 50.0), rng.uniform(0.0, 30_000.0)])
        memory = rng.choice([64, 128, 129, 512, 1769, 10240])
        status = rng.choice(["succeeded", "succeeded", "failed"])
        out.append((rng.choice(list(TENANTS)), InvocationRecord(  # billed as InvocationService bills it
            f"inv-{i:05d}", rng.choice(["a", "b", "c"]), 1, "api", status, None, None, init > 0, init, duration,
            billed_ms(init + duration), memory, 10, started, started + (init + duration) / 1000)))  # fmt: skip
    return out


def raw_spans(rng: random.Random, n: int) -> list[ProvisionedSpan]:
    spans, at = [], int(START * 1000)
    for _ in range(n):  # consecutive spans of one version never overlap
        length = rng.randrange(1, 7_200_000)
        spans.append(ProvisionedSpan("p", 1, rng.choice(list(TENANTS)), rng.choice([128, 1024]), rng.randrange(1, 4),
                                     at, at + length))  # fmt: skip
        at += length + rng.randrange(0, 60_000)
    return spans


def reference_total(plan_name: str, invocations: list[InvocationRecord], spans: list[ProvisionedSpan]) -> int:
    """Micro-units, from the raw measurements, in Decimal: billed ms = init + execution rounded to
    the microsecond then up to the ms (at least 1); each line rounded half up; free tier per month."""
    getcontext().prec = 60
    plan = PLANS.plans[plan_name]
    micro, gb = Decimal("0.000001"), Decimal(1024 * 1000)
    requests, mb_ms, prov_mb_ms = len(invocations), Decimal(0), Decimal(0)
    for r in invocations:
        ms = Decimal(r.init_ms + r.duration_ms).quantize(Decimal("0.001"), ROUND_HALF_EVEN)
        mb_ms += r.memory_mb * max(Decimal(1), ms.to_integral_value(ROUND_CEILING))
    for s in spans:
        prov_mb_ms += Decimal(s.memory_mb * s.instances * (s.end_ms - s.start_ms))
    per_request = Decimal(plan.per_million_requests) / Decimal(1_000_000)
    gb_s, prov_gb_s = mb_ms / gb, prov_mb_ms / gb
    req_line = (per_request * requests).quantize(micro, ROUND_HALF_UP)
    compute_line = (Decimal(plan.per_gb_s) * gb_s).quantize(micro, ROUND_HALF_UP)
    total = req_line + compute_line + (Decimal(plan.per_provisioned_gb_s) * prov_gb_s).quantize(micro, ROUND_HALF_UP)
    total -= min(req_line, (per_request * min(requests, plan.free_requests)).quantize(micro, ROUND_HALF_UP))
    total -= min(compute_line, (Decimal(plan.per_gb_s) * min(gb_s, plan.free_gb_s)).quantize(micro, ROUND_HALF_UP))
    return int(total / micro)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_invoices_of_random_usage_match_the_reference_to_the_micro_unit(tmp_path, seed):
    rng = random.Random(seed)
    invocations = raw_invocations(rng, 1500)
    spans = raw_spans(rng, 40)
    store = SqlStore(f"sqlite:///{tmp_path / 'mist.db'}")
    writer = SerialWriter()
    meter = Meter(Ledger(store, Journal(tmp_path / "journal"), writer), store, PLANS, wall=lambda: START + 1)
    await meter.start()
    billing = BillingService(meter, store, wall=lambda: START + 1)
    for tenant, plan in TENANTS.items():
        await billing.set_tenant(tenant, plan=plan)
    records = [from_invocation(r, tenant) for tenant, r in invocations] + [u for s in spans for u in from_span(s)]
    rng.shuffle(records)
    for r in records:
        await meter.ledger.append(r)
    await meter.ledger.flush()
    for r in rng.sample(records, 300):  # replayed: a journal imported twice, a settlement retried
        await meter.ledger.append(r)
    try:
        for tenant, plan in TENANTS.items():
            mine = [r for t, r in invocations if t == tenant]
            my_spans = [s for s in spans if s.tenant == tenant]
            doc = await billing.invoice(tenant, MONTH)
            assert doc["total_micros"] == reference_total(plan, mine, my_spans), tenant
            assert doc["usage"]["requests"] == len(mine)
            assert doc["total_micros"] == sum(line["amount_micros"] for line in doc["lines"])
            report = await billing.usage(tenant, START, END, "function")
            assert {row["function"]: row["requests"] for row in report["rows"]} == {
                f: sum(r.function == f for r in mine) for f in {r.function for r in mine} | ({"p"} if my_spans else set())}
            assert report["total"]["failed"] == sum(r.status == "failed" for r in mine)
    finally:
        await meter.stop()
        writer.close()
        store.close()


async def test_a_tenant_billing_change_applies_to_the_whole_month(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path / 'mist.db'}")
    writer = SerialWriter()
    meter = Meter(Ledger(store, Journal(tmp_path / "journal"), writer), store, PLANS, wall=lambda: START + 1)
    await meter.start()
    billing = BillingService(meter, store, wall=lambda: START + 1)
    try:
        rec = InvocationRecord("one", "a", 1, "api", "succeeded", None, None, False, 0.0, 1000.0, 1000, 1024, 1,
                               START + 10, START + 11)  # fmt: skip
        await meter.record(from_invocation(rec, "acme"))
        before = (await billing.invoice("acme", MONTH))["total_micros"]
        await billing.set_tenant("acme", plan="none-free")
        after = await billing.invoice("acme", MONTH)
        assert before == 0 and after["plan"]["name"] == "none-free"
        assert after["total_micros"] == reference_total("none-free", [rec], []) == 101  # 1.11 micro-units rounded to 1, + 1 GB-s at 100
        assert store.get_tenant_billing("acme") == TenantBilling("acme", "none-free", None)
    finally:
        await meter.stop()
        writer.close()
        store.close()
