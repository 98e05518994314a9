"""The monthly spend cap as a pure function: a tenant's running month-to-date total in, whether
its cap is reached out, cheaply enough to run after every invocation.

The exact test is `mist.core.pricing.over_cap`: the month's invoice total (after the free
tier, each line rounded to micro-units) >= the cap. Computing an invoice costs tens of
microseconds of Fraction arithmetic, so `add` only does it when it cannot prove the cap is
still far: an invoice total grows, per unit added, by at most the unit's price (the free tier
only lowers it) plus one micro-unit of rounding per line. So with `spent` the exact total at the
last check, `spent + bound(added since) + 3 < cap` proves the cap is not reached; otherwise the
exact total is computed again. The decision is always the exact one.

Worked example (cap 1.00 USD = 1,000,000 micro-units, $0.20 per million requests, 1,000,000
free): at 5,000,000 requests the exact total is 800,000; each further request can add at most
0.2 micro-units, so the next 999,985 requests are admitted on the bound alone; the exact
total is computed again only when the bound can no longer prove the cap far, and it is reached
at 6,000,000 requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from mist.core.pricing import MB_MS_PER_GB_S, MICROS, PricePlan, Usage, invoice

ROUNDING_SLACK = 3  # micro-units: one per line (requests, compute, provisioned)


@dataclass(frozen=True)
class Rates:
    """Upper bounds, in micro-units per unit, of what one more unit can add to a total."""

    per_request: float
    per_mb_ms: float
    per_provisioned_mb_ms: float

    @classmethod
    def of(cls, plan: PricePlan) -> Rates:
        up = 1 + 1e-9  # float rounding of the rates and the products, far below a micro-unit
        return cls(
            float(Fraction(plan.per_million_requests)) * up,  # type: ignore[arg-type]  # per 1e6 requests x 1e6 micros
            float(Fraction(plan.per_gb_s) * MICROS / MB_MS_PER_GB_S) * up,  # type: ignore[arg-type]
            float(Fraction(plan.per_provisioned_gb_s) * MICROS / MB_MS_PER_GB_S) * up,  # type: ignore[arg-type]
        )

    def bound(self, added: Usage) -> float:
        return (added.requests * self.per_request + added.mb_ms * self.per_mb_ms
                + added.provisioned_mb_ms * self.per_provisioned_mb_ms + ROUNDING_SLACK)  # fmt: skip


@dataclass(frozen=True)
class Spend:
    """A tenant's month so far, as the spend cap sees it."""

    usage: Usage = Usage()  # month to date
    checked: Usage = Usage()  # the usage `spent_micros` was computed for
    spent_micros: int = 0  # the exact invoice total of `checked`
    reached: bool = False
    exact_checks: int = 0  # how often the invoice was computed (statistics)


def total(plan: PricePlan, usage: Usage) -> int:
    return invoice(plan, {"": usage}).total_micros


def start(plan: PricePlan, cap_micros: int | None, usage: Usage) -> Spend:
    """The spend of a month that already holds `usage` (mist starting, a plan or cap changed)."""
    spent = total(plan, usage)
    return Spend(usage, usage, spent, cap_micros is not None and spent >= cap_micros, 1)


def add(plan: PricePlan, rates: Rates, cap_micros: int | None, spend: Spend, added: Usage) -> Spend:
    """`spend` after `added`; `reached` is exactly `over_cap` of the new month-to-date usage."""
    usage = spend.usage + added
    if cap_micros is None or spend.reached:  # usage only grows within a month: reached stays reached
        return Spend(usage, spend.checked, spend.spent_micros, spend.reached, spend.exact_checks)
    since = Usage(usage.requests - spend.checked.requests, usage.mb_ms - spend.checked.mb_ms,
                  usage.provisioned_mb_ms - spend.checked.provisioned_mb_ms)  # fmt: skip
    if spend.spent_micros + rates.bound(since) < cap_micros:
        return Spend(usage, spend.checked, spend.spent_micros, False, spend.exact_checks)
    spent = total(plan, usage)
    return Spend(usage, usage, spent, spent >= cap_micros, spend.exact_checks + 1)
