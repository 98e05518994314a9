"""MemoryUsage: the UsageStore of mist/metering/store.py in memory, mixed into MemoryStore (so
settlements store their usage too); it passes the same contract tests as the SQL store."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mist.core.pricing import Usage
from mist.metering.plans import TenantBilling
from mist.metering.store import UsageRow, add_to_row, check_grouping, group_key
from mist.metering.usage import UsageRecord, to_us


class MemoryUsage:
    _lock: threading.Lock

    def __init__(self) -> None:
        self._usage: dict[str, UsageRecord] = {}
        self._billing: dict[str, TenantBilling] = {}

    def _store_usage(self, records: Sequence[UsageRecord]) -> int:
        """Under the lock."""
        new = [r for r in records if r.id not in self._usage]
        for r in new:
            self._usage[r.id] = r
        return len(new)

    def add_usage(self, records: Sequence[UsageRecord]) -> int:
        with self._lock:
            return self._store_usage(records)

    def _between(self, tenant: str | None, start: float, end: float) -> list[UsageRecord]:
        lo, hi = to_us(start), to_us(end)
        with self._lock:
            return [r for r in self._usage.values()
                    if lo <= r.started_us < hi and tenant in (None, r.tenant)]  # fmt: skip

    def usage_rows(self, tenant: str | None, start: float, end: float, by: str) -> list[UsageRow]:
        check_grouping(by)
        rows: dict[tuple[str, str], UsageRow] = {}
        for r in self._between(tenant, start, end):
            key = (r.tenant, group_key(by, r))
            rows[key] = add_to_row(rows.get(key) or UsageRow(*key), r)
        return [rows[k] for k in sorted(rows)]

    def usage_records(
        self, tenant: str | None, start: float, end: float, *, after: str | None = None, limit: int = 1000
    ) -> list[UsageRecord]:
        found = sorted((r for r in self._between(tenant, start, end) if after is None or r.id > after),
                       key=lambda r: r.id)  # fmt: skip
        return found[:limit]

    def get_usage(self, record_id: str) -> UsageRecord | None:
        with self._lock:
            return self._usage.get(record_id)

    def tenant_totals(self, start: float, end: float) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for r in self._between(None, start, end):
            out[r.tenant] = out.get(r.tenant, Usage()) + r.usage()
        return out

    def get_tenant_billing(self, tenant: str) -> TenantBilling | None:
        with self._lock:
            return self._billing.get(tenant)

    def list_tenant_billing(self) -> list[TenantBilling]:
        with self._lock:
            return [self._billing[t] for t in sorted(self._billing)]

    def set_tenant_billing(self, billing: TenantBilling, now: float) -> None:
        with self._lock:
            self._billing[billing.tenant] = billing
