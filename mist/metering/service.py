"""BillingService: what the API and the CLI ask of metering.

    usage(tenant, start, end, by)     totals per function, UTC day or UTC hour
    records(tenant, start, end, ...)  the ledger itself, record by record
    invoice(tenant, "2026-11")        line items, free tier and total of a month
    plans(), tenants(), tenant(t)     the price plans; tenants' plans, caps and month so far
    set_tenant(t, plan=, cap=)        a tenant's plan and monthly spend cap

Reads first flush the ledger, so a report includes every invocation answered before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mist.core.pricing import Usage, invoice
from mist.errors import InvalidRequest
from mist.metering import reports
from mist.metering.meter import Meter, TenantSpend
from mist.metering.plans import TenantBilling, spend_cap
from mist.metering.store import UsageStore, check_grouping
from mist.metering.usage import UsageRecord, month_bounds, month_of
from mist.models import NAME_RE, NAME_RULE, FunctionVersion

MAX_RECORDS = 10_000
_UNSET: Any = object()


def check_tenant(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest(f"invalid tenant name {name!r}: use {NAME_RULE}")
    return name


class BillingService:
    def __init__(self, meter: Meter, store: UsageStore, *, wall: Callable[[], float] = time.time) -> None:
        self.meter = meter
        self._store = store
        self._wall = wall

    def check(self, fv: FunctionVersion) -> None:
        """SpendCapReached if fv's tenant reached its cap (asynchronous invocations, at the API)."""
        self.meter.check(fv)

    def period(self, start: float | None, end: float | None) -> tuple[float, float]:
        """[start, end): by default the current UTC month."""
        month_start, month_end = month_bounds(month_of(self._wall()))
        start = month_start if start is None else start
        end = month_end if end is None else end
        if end <= start:
            raise InvalidRequest("to must be after from (the period is [from, to), to excluded)")
        return start, end

    async def usage(self, tenant: str | None, start: float | None, end: float | None, by: str) -> dict[str, Any]:
        check_grouping(by)
        if tenant is not None:
            check_tenant(tenant)
        start, end = self.period(start, end)
        await self.meter.ledger.flush()
        rows = await asyncio.to_thread(self._store.usage_rows, tenant, start, end, by)
        return reports.usage_report(rows, tenant=tenant, start=start, end=end, by=by)

    async def records(
        self, tenant: str | None, start: float | None, end: float | None, *, after: str | None, limit: int
    ) -> list[UsageRecord]:
        if tenant is not None:
            check_tenant(tenant)
        if not 1 <= limit <= MAX_RECORDS:
            raise InvalidRequest(f"limit must be from 1 to {MAX_RECORDS}, got {limit}")
        start, end = self.period(start, end)
        await self.meter.ledger.flush()
        return await asyncio.to_thread(self._store.usage_records, tenant, start, end, after=after, limit=limit)

    async def record(self, record_id: str) -> UsageRecord | None:
        await self.meter.ledger.flush()
        return await asyncio.to_thread(self._store.get_usage, record_id)

    async def invoice(self, tenant: str, month: str) -> dict[str, Any]:
        check_tenant(tenant)
        start, end = month_bounds(month)
        await self.meter.ledger.flush()
        rows = await asyncio.to_thread(self._store.usage_rows, tenant, start, end, "function")
        by_function: dict[str, Usage] = {r.key: r.usage for r in rows}
        spend = self.meter.spend(tenant)
        inv = invoice(spend.plan, by_function)
        return reports.invoice_json(inv, tenant=tenant, month=month, start=start, end=end,
                                    closed=self._wall() >= end, cap_micros=spend.cap_micros)  # fmt: skip

    def plans(self) -> dict[str, Any]:
        return self.meter.config.to_json()

    def tenant(self, tenant: str) -> TenantSpend:
        return self.meter.spend(check_tenant(tenant))

    async def tenants(self) -> list[TenantSpend]:
        """Tenants with settings of their own or usage this month, by name."""
        settings = await asyncio.to_thread(self._store.list_tenant_billing)
        names = {b.tenant for b in settings} | set(self.meter.active_tenants())
        return [self.meter.spend(name) for name in sorted(names)]

    async def set_tenant(self, tenant: str, *, plan: Any = _UNSET, cap: Any = _UNSET) -> TenantSpend:
        """Change what is given: `plan` (a plan's name, or None for the default plan) and `cap`
        (an amount, or None for the plan's cap)."""
        check_tenant(tenant)
        current = await asyncio.to_thread(self._store.get_tenant_billing, tenant) or TenantBilling(tenant)
        new_plan = current.plan if plan is _UNSET else plan
        if new_plan is not None and new_plan not in self.meter.config.plans:
            raise InvalidRequest(
                f"plan {new_plan!r} does not exist; plans: {', '.join(sorted(self.meter.config.plans))} (mist billing plans)"
            )
        new_cap = current.monthly_spend_cap if cap is _UNSET else spend_cap(cap)
        billing = TenantBilling(tenant, new_plan, new_cap)
        await asyncio.to_thread(self._store.set_tenant_billing, billing, self._wall())
        self.meter.configure(billing)
        return self.meter.spend(tenant)
