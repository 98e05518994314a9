import random

import pytest

from mist.core.pricing import PricePlan, Usage, over_cap
from mist.metering import caps

LAMBDA = PricePlan("standard")
NO_FREE = PricePlan("no-free", free_requests=0, free_gb_s=0, per_provisioned_gb_s="0.0001")


def run(plan, cap_micros, additions, start=Usage()):
    rates = caps.Rates.of(plan)
    spend = caps.start(plan, cap_micros, start)
    seen = []
    for added in additions:
        spend = caps.add(plan, rates, cap_micros, spend, added)
        seen.append(spend)
    return seen


@pytest.mark.parametrize(
    ("plan", "cap", "usage", "reached"),
    [
        (LAMBDA, None, Usage(requests=10**9), False),  # no cap: never refused
        (LAMBDA, 1_000_000, Usage(requests=5_000_000), False),  # 1.00 - 0.20 free = 0.80
        (LAMBDA, 1_000_000, Usage(requests=6_000_000), True),  # exactly the cap reaches it
        (LAMBDA, 0, Usage(), True),  # a zero cap refuses from the first invocation
        (LAMBDA, 1, Usage(requests=1_000_000), False),  # the free tier is not spend
        (NO_FREE, 20_000, Usage(provisioned_mb_ms=1024 * 1000 * 200), True),  # provisioned time counts
    ],
)
def test_a_month_that_starts_with_usage_knows_at_once_whether_its_cap_is_reached(plan, cap, usage, reached):
    assert caps.start(plan, cap, usage).reached is reached


def test_the_cap_is_reached_by_the_exact_request_that_reaches_it():
    # 1.00 USD: 5,000,000 requests are 0.80 after the free tier; each further request adds 0.2
    # micro-units; at 5,999,998 the requests line is 1,199,999.6 micro-units, rounded half up to 1.20
    seen = run(LAMBDA, 1_000_000, [Usage(requests=1)] * 1000, start=Usage(requests=5_999_500))
    first = next(i for i, s in enumerate(seen) if s.reached)
    assert seen[first].usage.requests == 5_999_998 and seen[first - 1].usage.requests == 5_999_997
    assert seen[first].spent_micros == 1_000_000 and not seen[first - 1].reached


def test_the_bound_saves_the_invoice_computation_far_from_the_cap():
    seen = run(LAMBDA, 1_000_000, [Usage(requests=10)] * 100_000, start=Usage(requests=5_000_000))
    assert seen[-1].reached and seen[-1].exact_checks < 100  # not one per call: 100,000 calls, a few dozen invoices


def test_without_a_cap_nothing_is_computed():
    seen = run(LAMBDA, None, [Usage(requests=1, mb_ms=128)] * 1000)
    assert seen[-1].exact_checks == 1 and seen[-1].usage == Usage(1000, 128_000) and not seen[-1].reached


@pytest.mark.parametrize("seed", range(20))
def test_on_random_usage_the_decision_is_always_the_exact_one(seed):
    rng = random.Random(seed)
    plan = rng.choice([LAMBDA, NO_FREE, PricePlan("cheap", per_gb_s="0.000001", free_requests=10, free_gb_s=1)])
    cap = rng.choice([0, 1, 50, 10_000, 1_000_000, 40_000_000])
    additions = [Usage(requests=rng.choice([0, 1, 1, 1, 1000]), mb_ms=rng.choice([0, 128, 1_024_000, 10**9]),
                       provisioned_mb_ms=rng.choice([0, 0, 0, 10**8])) for _ in range(400)]  # fmt: skip
    total = Usage()
    for spend, added in zip(run(plan, cap, additions), additions):
        total = total + added
        assert spend.usage == total
        assert spend.reached is over_cap(PricePlan(plan.name, plan.per_million_requests, plan.per_gb_s,
                                                   plan.per_provisioned_gb_s, plan.free_requests, plan.free_gb_s,
                                                   plan.currency, monthly_spend_cap=cap / 1_000_000), total)
