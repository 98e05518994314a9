import doctest
import random
from decimal import ROUND_HALF_UP, Decimal, getcontext
from fractions import Fraction

import pytest

from mist.core import pricing
from mist.core.pricing import PricePlan, Usage, format_money, invoice, over_cap
from mist.errors import InvalidRequest

LAMBDA = PricePlan("lambda-like", per_million_requests="0.20", per_gb_s="0.0000166667",
                   per_provisioned_gb_s="0.0000041667", free_requests=1_000_000, free_gb_s=400_000)
NO_FREE = PricePlan("no-free", per_million_requests="0.20", per_gb_s="0.0000166667", free_requests=0, free_gb_s=0)


def reference_total(plan: PricePlan, usage: Usage) -> Decimal:
    """An independent computation in Decimal at 50 digits: each line rounded to micro-units."""
    getcontext().prec = 50
    micro = Decimal("0.000001")
    gb_s = Decimal(usage.mb_ms) / Decimal(1024 * 1000)
    prov = Decimal(usage.provisioned_mb_ms) / Decimal(1024 * 1000)
    per_req = Decimal(plan.per_million_requests) / Decimal(1_000_000)
    lines = [per_req * usage.requests, Decimal(plan.per_gb_s) * gb_s]
    if usage.provisioned_mb_ms:
        lines.append(Decimal(plan.per_provisioned_gb_s) * prov)
    rounded = [x.quantize(micro, rounding=ROUND_HALF_UP) for x in lines]
    free_req = min(usage.requests, plan.free_requests)
    if free_req:
        rounded.append(-min(rounded[0], (per_req * free_req).quantize(micro, rounding=ROUND_HALF_UP)))
    free_gb = min(gb_s, Decimal(plan.free_gb_s))
    if free_gb:
        rounded.append(-min(rounded[1], (Decimal(plan.per_gb_s) * free_gb).quantize(micro, rounding=ROUND_HALF_UP)))
    return sum(rounded, Decimal(0))


@pytest.mark.parametrize(
    ("plan", "usage", "total"),
    [
        (LAMBDA, Usage(), "0.00"),  # idle costs nothing
        (LAMBDA, Usage(requests=999_999, mb_ms=128 * 100 * 999_999), "0.00"),  # inside the free tier
        (NO_FREE, Usage(requests=1_000_000), "0.20"),
        (NO_FREE, Usage(requests=1, mb_ms=128 * 1), "0.00"),  # 0.0000002 + 0.000000002: rounds to 0 micro-units
        (NO_FREE, Usage(mb_ms=1024 * 1000 * 1000), "0.02"),  # 1000 GB-s x 0.0000166667 = 0.0166667
        (LAMBDA, Usage(requests=3_000_000, mb_ms=512 * 120 * 3_000_000), "0.40"),  # the worked example
        (LAMBDA, Usage(requests=2_000_000, mb_ms=1024 * 1000 * 500_000), "1.87"),  # 100,000 GB-s over the free tier
        (LAMBDA, Usage(provisioned_mb_ms=1024 * 1000 * 3600), "0.02"),  # 1 GB provisioned for an hour: never free
    ],
)
def test_invoice_totals(plan, usage, total):
    inv = invoice(plan, {"f": usage})
    assert format_money(inv.total_micros, None) == total
    assert Decimal(inv.total_micros) / Decimal(1_000_000) == reference_total(plan, usage)


def test_free_tier_is_per_month_not_per_function():
    one = invoice(LAMBDA, {"a": Usage(requests=800_000), "b": Usage(requests=800_000)})
    assert one.usage.requests == 1_600_000
    assert [(line.kind, line.amount_micros) for line in one.lines if line.kind.endswith("requests")] == [
        ("requests", 320_000), ("free requests", -200_000)]


def test_random_usage_matches_the_reference_to_the_micro_unit_and_lines_sum_to_the_total():
    rng = random.Random(7)
    for _ in range(500):
        usage = Usage(requests=rng.randrange(0, 10**8), mb_ms=rng.randrange(0, 10**13),
                      provisioned_mb_ms=rng.choice([0, rng.randrange(0, 10**12)]))
        plan = rng.choice([LAMBDA, NO_FREE])
        inv = invoice(plan, {"f": usage})
        assert inv.total_micros == sum(line.amount_micros for line in inv.lines)
        assert Decimal(inv.total_micros) / Decimal(1_000_000) == reference_total(plan, usage)
        assert inv.total_micros >= 0


def test_summing_many_small_usages_has_no_drift():
    # a million 1 ms invocations of 128 MB, accumulated one by one as integers
    usage = Usage()
    for _ in range(1000):
        usage = usage + Usage(requests=1000, mb_ms=128 * 1000)
    assert usage == Usage(requests=1_000_000, mb_ms=128_000_000)
    assert usage.gb_s == Fraction(125, 1)


@pytest.mark.parametrize(
    ("cap", "usage", "over"),
    [
        (None, Usage(requests=10**10), False),
        ("1.00", Usage(requests=5_000_000), False),  # 1.00 - 0.20 free = 0.80
        ("1.00", Usage(requests=6_000_000), True),  # exactly 1.00 reaches the cap
        ("0", Usage(), True),  # a zero cap refuses everything
    ],
)
def test_spend_cap(cap, usage, over):
    plan = PricePlan("capped", monthly_spend_cap=cap)
    assert over_cap(plan, usage) is over


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_gb_s": "-1"}, "per_gb_s must be a number >= 0"),
        ({"per_million_requests": "abc"}, "per_million_requests must be a decimal number"),
        ({"free_requests": -5}, "free_requests must be a whole number >= 0"),
        ({"free_gb_s": 1.5}, "free_gb_s must be a whole number >= 0"),
        ({"monthly_spend_cap": "NaN"}, "monthly_spend_cap must be a number >= 0"),
    ],
)
def test_bad_plans_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        PricePlan("bad", **kwargs)


@pytest.mark.parametrize(("micros", "text"), [(0, "0.00"), (4_999, "0.00"), (5_000, "0.01"), (1_234_567, "1.23"),
                                              (-200_000, "-0.20"), (10**12, "1000000.00")])
def test_format_money(micros, text):
    assert format_money(micros, None) == text


def test_worked_example():
    assert doctest.testmod(pricing).failed == 0
