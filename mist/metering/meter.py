"""Meter: metering on the invocation path.

    meter.check(fv)              before an attempt: SpendCapReached if fv.tenant's cap is reached
    await meter.record(usage)    after a synchronous attempt ran: in the ledger before the answer
    meter.settled(usage)         an asynchronous attempt's usage, committed with its settlement
    meter.provisioned(span)      the Worker's report of provisioned instances (a callback)
    meter.configure(billing)     a tenant's plan or cap changed
    meter.spend(tenant)          the tenant's month so far (a snapshot, for the API)

`check` is a dictionary lookup: each tenant's month-to-date usage is kept in memory (loaded
from the usage table at start, then added to as records come in) and whether its cap is
reached is decided when usage is added (`caps.add`, exact and cheap), not per call. At the
start of a UTC month every tenant's total starts again from zero.

In a cluster (`mist up --db`, `refresh_s` given) the other processes' usage reaches the usage
table through their ledgers (imported every second) and their settlements; every `refresh_s`
(2 s) one aggregate query reads it again, plus this process's records not yet imported, so a
cap reached through any process is enforced by all within about refresh_s + the import interval
(docs/billing.md bounds the overrun).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mist.core.pricing import PricePlan, Usage, format_money
from mist.errors import SpendCapReached
from mist.metering import caps
from mist.metering.ledger import Ledger
from mist.metering.plans import BillingConfig, TenantBilling
from mist.metering.store import UsageStore
from mist.metering.usage import (
    INVOCATION,
    UsageRecord,
    from_span,
    month_bounds,
    month_of,
    to_us,
)
from mist.models import FunctionVersion
from mist.worker.types import ProvisionedSpan

log = logging.getLogger(__name__)


class _Tenant:
    """A tenant's month so far. Usage is counted in plain integers (the invocation path);
    only a tenant with a cap also keeps a `caps.Spend`, and `refused` says it is reached."""

    __slots__ = ("name", "billing", "plan", "rates", "cap", "requests", "mb_ms", "provisioned_mb_ms", "spend",
                 "refused")  # fmt: skip

    def __init__(self, name: str, billing: TenantBilling, config: BillingConfig, usage: Usage) -> None:
        self.name = name
        self.billing = billing
        self.plan = config.plan(billing.plan)
        self.rates = caps.Rates.of(self.plan)
        self.cap = billing.cap_micros(self.plan)
        self.reset(usage)

    def reset(self, usage: Usage) -> None:
        """The month so far is `usage` (start, or the cluster's total read again)."""
        self.requests, self.mb_ms, self.provisioned_mb_ms = usage.requests, usage.mb_ms, usage.provisioned_mb_ms
        self.spend = caps.start(self.plan, self.cap, usage) if self.cap is not None else None
        self.refused = self.spend is not None and self.spend.reached

    def usage(self) -> Usage:
        return Usage(self.requests, self.mb_ms, self.provisioned_mb_ms)

    def add(self, record: UsageRecord) -> None:
        if record.kind == INVOCATION:
            self.requests += 1
            self.mb_ms += record.mb_ms
        else:
            self.provisioned_mb_ms += record.mb_ms
        if self.spend is not None and not self.refused:
            self.spend = caps.add(self.plan, self.rates, self.cap, self.spend, record.usage())
            self.refused = self.spend.reached


@dataclass(frozen=True)
class TenantSpend:
    tenant: str
    month: str
    plan: PricePlan
    billing: TenantBilling
    cap_micros: int | None
    usage: Usage  # month to date
    spent_micros: int  # the month's invoice total so far (after the free tier)
    reached: bool

    def to_json(self) -> dict[str, object]:
        money = self.plan.currency
        return {
            "tenant": self.tenant, "plan": self.plan.name, "plan_is_default": self.billing.plan is None,
            "monthly_spend_cap": None if self.cap_micros is None else format_money(self.cap_micros, None),
            "cap_is_plan_default": self.billing.monthly_spend_cap is None, "currency": money,
            "month": self.month, "month_to_date": format_money(self.spent_micros, None),
            "month_to_date_micros": self.spent_micros, "cap_reached": self.reached,
            "requests": self.usage.requests, "mb_ms": self.usage.mb_ms,
            "provisioned_mb_ms": self.usage.provisioned_mb_ms,
        }  # fmt: skip


@dataclass(frozen=True)
class MeterStats:
    month: str
    tenants: int
    capped: int  # tenants with a spend cap
    refusing: tuple[str, ...]  # tenants whose cap is reached
    refused: int  # invocations refused for a cap since start
    exact_checks: int  # invoice computations the caps needed this month
    refreshes: int  # month-to-date totals read again from the shared usage table (cluster mode)


class Meter:
    def __init__(
        self, ledger: Ledger, store: UsageStore, config: BillingConfig, *, wall: Callable[[], float] = time.time,
        refresh_s: float | None = None,
    ) -> None:
        """`refresh_s`: in a cluster, how often each tenant's month so far is read again from the
        usage table the processes share (`refresh`); None: this process sees all usage itself."""
        self.ledger = ledger
        self.config = config
        self._store = store
        self._wall = wall
        self._tenants: dict[str, _Tenant] = {}
        self._month = ""
        self._month_start = self._month_end = 0.0
        self._month_start_us = self._month_end_us = 0
        self._refused = 0
        self._refresh_s = refresh_s
        self._refreshes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Import what an earlier run left in the journal, then load the month so far."""
        await self.ledger.start()
        self._set_month(self._wall())
        settings = await asyncio.to_thread(self._store.list_tenant_billing)
        totals = await asyncio.to_thread(self._store.tenant_totals, self._month_start, self._month_end)
        for billing in settings:
            self._tenants[billing.tenant] = _Tenant(billing.tenant, billing, self.config,
                                                    totals.get(billing.tenant, Usage()))  # fmt: skip
        for name, usage in totals.items():
            if name not in self._tenants:
                self._tenants[name] = _Tenant(name, TenantBilling(name), self.config, usage)
        self._task = asyncio.create_task(self._run(), name="meter-month")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.ledger.stop()

    # -- the invocation path -------------------------------------------------------------------------

    def check(self, fv: FunctionVersion) -> None:
        t = self._tenants.get(fv.tenant) or self._tenant(fv.tenant)
        if t.refused:
            self._refused += 1
            spent = t.spend.spent_micros if t.spend is not None else 0
            raise SpendCapReached(
                f"tenant {t.name!r} reached its monthly spend cap of {format_money(t.cap or 0, t.plan.currency)} "
                f"for {self._month} ({format_money(spent, t.plan.currency)} so far): invocations "
                f"are refused until the month ends or the cap is raised (mist billing set {t.name} --cap AMOUNT)"
            )

    async def record(self, usage: UsageRecord) -> None:
        ledger = self.ledger
        ticket = ledger.write(usage)  # ledger.append, one coroutine less on every invocation
        self._count(usage)  # with its journal write, no await between: `refresh` sees both or neither
        if ticket is not None and ledger.syncs:
            await ledger.sync(ticket)

    def settled(self, usage: UsageRecord) -> None:
        self._count(usage)

    def provisioned(self, span: ProvisionedSpan) -> None:
        for usage in from_span(span):
            self.ledger.append_nowait(usage)
            self._count(usage)

    def configure(self, billing: TenantBilling) -> None:
        old = self._tenants.get(billing.tenant)
        self._tenants[billing.tenant] = _Tenant(billing.tenant, billing, self.config,
                                                old.usage() if old else Usage())  # fmt: skip

    async def follow(self) -> list[str]:
        """Take the plans and caps set through other processes of a cluster (ChangeFeed topic
        "billing"); usage counted here is kept. Returns the tenants whose settings changed."""
        changed = []
        for billing in await asyncio.to_thread(self._store.list_tenant_billing):
            held = self._tenants.get(billing.tenant)
            if held is None or held.billing != billing:
                self.configure(billing)
                changed.append(billing.tenant)
        return changed

    async def refresh(self) -> list[str]:
        """Read every tenant's month so far again: the usage table shared by a cluster's
        processes plus this process's records not imported yet (`Ledger.totals`), so a cap
        reached through any process is enforced here too. Returns the tenants whose total moved."""
        month = self._month
        totals = await self.ledger.totals(self._month_start, self._month_end)
        if self._month != month:  # a new month began meanwhile: these totals are last month's
            return []
        self._refreshes += 1
        changed = []
        for name, usage in totals.items():
            t = self._tenants.get(name) or self._tenant(name)
            if t.usage() != usage:
                t.reset(usage)
                changed.append(name)
        return changed

    def spend(self, tenant: str) -> TenantSpend:
        t = self._tenants.get(tenant) or self._tenant(tenant)
        usage = t.usage()
        return TenantSpend(tenant, self._month, t.plan, t.billing, t.cap, usage, caps.total(t.plan, usage), t.refused)

    def active_tenants(self) -> list[str]:
        """Tenants with usage this month."""
        return [name for name, t in self._tenants.items() if t.requests or t.provisioned_mb_ms]

    def statistics(self) -> MeterStats:
        ts = self._tenants.values()
        return MeterStats(self._month, len(self._tenants), sum(t.cap is not None for t in ts),
                          tuple(sorted(t.name for t in ts if t.refused)), self._refused,
                          sum(t.spend.exact_checks for t in ts if t.spend is not None), self._refreshes)  # fmt: skip

    # -- month-to-date totals -------------------------------------------------------------------------

    def _tenant(self, name: str) -> _Tenant:
        t = self._tenants[name] = _Tenant(name, TenantBilling(name), self.config, Usage())
        return t

    def _count(self, usage: UsageRecord) -> None:
        if not self._month_start_us <= usage.started_us < self._month_end_us:
            if usage.started_us < self._month_start_us:
                return  # began last month (the month was closed while it ran): not this month's
            self._roll(usage.started_us / 1e6)
        (self._tenants.get(usage.tenant) or self._tenant(usage.tenant)).add(usage)

    def _set_month(self, now: float) -> None:
        self._month = month_of(now)
        self._month_start, self._month_end = month_bounds(self._month)
        self._month_start_us, self._month_end_us = to_us(self._month_start), to_us(self._month_end)

    def _roll(self, now: float) -> None:
        """A new month: every tenant starts from zero (and refused tenants are served again)."""
        self._set_month(now)
        for name, t in list(self._tenants.items()):
            self._tenants[name] = _Tenant(name, t.billing, self.config, Usage())

    def tick(self) -> None:
        """Start a new month if the clock passed the end of this one (every second)."""
        now = self._wall()
        if now >= self._month_end:
            self._roll(now)

    async def _run(self) -> None:
        every = min(1.0, self._refresh_s or 1.0)
        due = 0.0
        while True:
            await asyncio.sleep(every)
            self.tick()
            due += every
            if self._refresh_s is not None and due >= self._refresh_s:
                due = 0.0
                try:
                    await self.refresh()
                except Exception:  # the database is away: the caps go on from what is counted here
                    log.warning("reading the cluster's usage totals failed; retrying in %.0f s", self._refresh_s,
                                exc_info=True)
