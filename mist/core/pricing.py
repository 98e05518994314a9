"""Price plans and invoices: usage in integer units in, money in integer micro-units out.

Usage is counted in integers only: requests, and memory x billed time in MB-ms (128 MB for 12
billed ms = 1,536 MB-ms); provisioned instances in MB-ms of provisioning. A GB-s is 1,024 MB x
1,000 ms = 1,024,000 MB-ms. Prices are exact decimals from the plan's configuration. Each line
item's amount is computed exactly (`Fraction`) and rounded once, half up, to an integer number
of micro-units (1e-6 of the currency); the invoice total is the sum of the rounded lines, so a
total always equals what its lines show. No float is involved anywhere.

The monthly free tier (Lambda's shape: free requests and free compute GB-s per month) is
applied to the month's totals, not per function, and never exceeds the usage it frees.

Worked example (plan: $0.20 per million requests, $0.0000166667 per GB-s, free 1,000,000
requests and 400,000 GB-s a month):

- 3,000,000 requests of a 512 MB function, 120 ms each: 3,000,000 x 512 x 120 = 184,320,000,000
  MB-ms = 180,000 GB-s;
- requests: 3,000,000 x 0.20 / 1e6 = $0.60; free tier -1,000,000 requests = -$0.20;
- compute: 180,000 x 0.0000166667 = $3.000006; free tier frees all of it (180,000 < 400,000):
  -$3.000006;
- total $0.40 (400,000 micro-dollars).

    >>> plan = PricePlan("standard", per_million_requests="0.20", per_gb_s="0.0000166667",
    ...                  free_requests=1_000_000, free_gb_s=400_000)
    >>> inv = invoice(plan, {"f": Usage(requests=3_000_000, mb_ms=184_320_000_000)})
    >>> [(line.kind, line.amount_micros) for line in inv.lines]
    [('requests', 600000), ('compute', 3000006), ('free requests', -200000), ('free compute', -3000006)]
    >>> inv.total_micros, format_money(inv.total_micros, "USD")
    (400000, '0.40 USD')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from mist.errors import InvalidRequest

MB_MS_PER_GB_S = 1024 * 1000
MICROS = 1_000_000


def _decimal(name: str, value: object) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(f"price plan: {name} must be a decimal number, got {value!r}") from None
    if not d.is_finite() or d < 0:
        raise InvalidRequest(f"price plan: {name} must be a number >= 0, got {value!r}")
    return d


@dataclass(frozen=True)
class PricePlan:
    """Prices per unit in `currency`; decimals given as strings ("0.0000166667") stay exact."""

    name: str
    per_million_requests: Decimal | str = Decimal("0.20")
    per_gb_s: Decimal | str = Decimal("0.0000166667")
    per_provisioned_gb_s: Decimal | str = Decimal("0.0000041667")
    free_requests: int = 1_000_000  # per month
    free_gb_s: int = 400_000  # per month, compute only (provisioned time is never free)
    currency: str = "USD"
    monthly_spend_cap: Decimal | str | None = None  # None: no cap

    def __post_init__(self) -> None:
        for key in ("per_million_requests", "per_gb_s", "per_provisioned_gb_s"):
            object.__setattr__(self, key, _decimal(key, getattr(self, key)))
        if self.monthly_spend_cap is not None:
            object.__setattr__(self, "monthly_spend_cap", _decimal("monthly_spend_cap", self.monthly_spend_cap))
        for key in ("free_requests", "free_gb_s"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequest(f"price plan: {key} must be a whole number >= 0, got {value!r}")
        if not self.name:
            raise InvalidRequest("price plan: name must not be empty")

    @property
    def cap_micros(self) -> int | None:
        cap = self.monthly_spend_cap
        return None if cap is None else _round_half_up(Fraction(cap) * MICROS)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Usage:
    """Integer usage totals (of a function, a day, a month...)."""

    requests: int = 0
    mb_ms: int = 0  # memory_mb x billed_ms, summed over invocation attempts
    provisioned_mb_ms: int = 0  # memory_mb x ms of provisioned (min) instances

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.requests + other.requests, self.mb_ms + other.mb_ms,
                     self.provisioned_mb_ms + other.provisioned_mb_ms)

    @property
    def gb_s(self) -> Fraction:
        return Fraction(self.mb_ms, MB_MS_PER_GB_S)

    @property
    def provisioned_gb_s(self) -> Fraction:
        return Fraction(self.provisioned_mb_ms, MB_MS_PER_GB_S)


@dataclass(frozen=True)
class LineItem:
    kind: str  # requests | compute | provisioned | free requests | free compute
    quantity: Fraction  # requests, or GB-s
    unit: str  # "requests" | "GB-s"
    unit_price: Decimal  # per unit (requests: per request)
    amount_micros: int  # rounded half up; negative for the free tier

    def as_json(self, currency: str) -> dict[str, object]:
        return {
            "kind": self.kind, "quantity": _qty(self.quantity), "unit": self.unit,
            "unit_price": format(self.unit_price, "f"), "amount": format_money(self.amount_micros, None),
            "amount_micros": self.amount_micros, "currency": currency,
        }


@dataclass(frozen=True)
class Invoice:
    plan: PricePlan
    usage: Usage  # the month's totals
    by_function: dict[str, Usage] = field(default_factory=dict)
    lines: tuple[LineItem, ...] = ()

    @property
    def total_micros(self) -> int:
        return sum(line.amount_micros for line in self.lines)


def _round_half_up(x: Fraction) -> int:
    """Nearest integer, halves away from zero (a bill never depends on banker's rounding)."""
    n = abs(x)
    whole = n.numerator // n.denominator
    if (n - whole) * 2 >= 1:
        whole += 1
    return whole if x >= 0 else -whole


def _qty(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    return f"{float(q):.6f}".rstrip("0").rstrip(".")  # display only; amounts never use it


def format_money(micros: int, currency: str | None) -> str:
    """Micro-units to a decimal string with cents (half up): 400000 -> "0.40"."""
    cents = _round_half_up(Fraction(micros, 10_000))
    sign = "-" if cents < 0 else ""
    text = f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"
    return f"{text} {currency}" if currency else text


def _usage_lines(usage: Usage, plan: PricePlan) -> list[LineItem]:
    per_request = plan.per_million_requests / Decimal(1_000_000)  # type: ignore[operator]
    lines = [
        LineItem("requests", Fraction(usage.requests), "requests", per_request,
                 _round_half_up(Fraction(per_request) * usage.requests * MICROS)),
        LineItem("compute", usage.gb_s, "GB-s", plan.per_gb_s,  # type: ignore[arg-type]
                 _round_half_up(Fraction(plan.per_gb_s) * usage.gb_s * MICROS)),  # type: ignore[arg-type]
    ]
    if usage.provisioned_mb_ms:
        lines.append(LineItem("provisioned", usage.provisioned_gb_s, "GB-s", plan.per_provisioned_gb_s,  # type: ignore[arg-type]
                              _round_half_up(Fraction(plan.per_provisioned_gb_s) * usage.provisioned_gb_s * MICROS)))  # type: ignore[arg-type]
    return lines


def invoice(plan: PricePlan, by_function: Mapping[str, Usage]) -> Invoice:
    """One month's invoice: usage lines on the month's totals, then the free tier as negative
    lines (each at most the line it frees, priced at that line's exact rate)."""
    total = Usage()
    for u in by_function.values():
        total = total + u
    lines = _usage_lines(total, plan)
    requests_line, compute_line = lines[0], lines[1]
    free_requests = min(total.requests, plan.free_requests)
    if free_requests:
        amount = -min(requests_line.amount_micros, _round_half_up(
            Fraction(requests_line.unit_price) * free_requests * MICROS))
        lines.append(LineItem("free requests", Fraction(-free_requests), "requests", requests_line.unit_price, amount))
    free_gb_s = min(total.gb_s, Fraction(plan.free_gb_s))
    if free_gb_s:
        amount = -min(compute_line.amount_micros, _round_half_up(Fraction(compute_line.unit_price) * free_gb_s * MICROS))
        lines.append(LineItem("free compute", -free_gb_s, "GB-s", compute_line.unit_price, amount))
    return Invoice(plan, total, dict(by_function), tuple(lines))


def over_cap(plan: PricePlan, month_to_date: Usage) -> bool:
    """True once a tenant's month-to-date invoice total (after the free tier) reached the
    plan's spend cap."""
    cap = plan.cap_micros
    return cap is not None and invoice(plan, {"": month_to_date}).total_micros >= cap
