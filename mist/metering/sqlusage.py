"""SqlUsage: the UsageStore (mist/metering/store.py) over SQLAlchemy, mixed into SqlStore.

Usage rows are inserted many per statement (mist/control/sqlbatch.py) with `ON CONFLICT DO NOTHING` on the attempt id, so a journal segment
imported twice (a crash between the import and the segment's deletion) or a settlement retried
stores nothing twice. Imports commit through `durable_writes` (SQLite: synchronous=FULL): the
journal segment is deleted only once its records are on disk in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa

from mist.control.sqlbatch import insert_rows
from mist.control.sqlschema import tenant_billing, usage
from mist.core.pricing import Usage
from mist.metering.plans import TenantBilling
from mist.metering.store import UsageRow, check_grouping, hour_key
from mist.metering.usage import INVOCATION, PROVISIONED, UsageRecord, to_us
from mist.models import split_id

COLUMNS = (
    "id", "kind", "tenant", "function", "version", "trigger", "started_us", "ended_us", "hour", "init_us",
    "duration_us", "billed_ms", "memory_mb", "instances", "mb_ms", "requests", "cold_start", "outcome", "error_type",
)  # fmt: skip


def _row(r: UsageRecord) -> tuple[object, ...]:
    return (r.id, r.kind, r.tenant, r.function, r.version, r.trigger, r.started_us, r.ended_us, r.hour, r.init_us,
            r.duration_us, r.billed_ms, r.memory_mb, r.instances, r.mb_ms, r.requests, r.cold_start, r.outcome,
            r.error_type)  # fmt: skip


def _record(r: sa.Row) -> UsageRecord:
    return UsageRecord(r.id, r.kind, r.tenant, r.function, r.version, r.trigger, int(r.started_us), int(r.ended_us),
                       int(r.init_us), int(r.duration_us), int(r.billed_ms), r.memory_mb, r.instances, bool(r.cold_start),
                       r.outcome, r.error_type)  # fmt: skip


def _sums() -> list[sa.ColumnElement]:
    c = usage.c
    invocation = c.kind == INVOCATION
    return [
        sa.func.sum(c.requests),
        sa.func.sum(sa.case((c.outcome == "failed", 1), else_=0)),
        sa.func.sum(sa.case((sa.and_(invocation, c.cold_start), 1), else_=0)),
        sa.func.sum(sa.case((invocation, c.billed_ms), else_=0)),
        sa.func.sum(sa.case((invocation, c.mb_ms), else_=0)),
        sa.func.sum(sa.case((c.kind == PROVISIONED, c.mb_ms), else_=0)),
    ]


def _ints(values: Sequence[object]) -> list[int]:
    return [int(v or 0) for v in values]  # type: ignore[call-overload]  # PostgreSQL sums are Decimal


class SqlUsage:
    engine: sa.Engine
    writes: sa.Engine
    durable_writes: sa.Engine

    def _insert_usage(self, conn: sa.Connection, records: Sequence[UsageRecord]) -> int:
        return insert_rows(conn, usage.name, COLUMNS, [_row(r) for r in records])

    def add_usage(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        with self.durable_writes.begin() as conn:
            return self._insert_usage(conn, records)

    def _between(self, q: sa.Select, tenant: str | None, start: float, end: float) -> sa.Select:
        q = q.where(usage.c.started_us >= to_us(start), usage.c.started_us < to_us(end))
        return q if tenant is None else q.where(usage.c.tenant == tenant)

    def usage_rows(self, tenant: str | None, start: float, end: float, by: str) -> list[UsageRow]:
        key = {"function": usage.c.function, "day": usage.c.hour // 24, "hour": usage.c.hour}[check_grouping(by)]
        q = self._between(sa.select(usage.c.tenant, key.label("k"), *_sums()), tenant, start, end)
        q = q.group_by(usage.c.tenant, key).order_by(usage.c.tenant, key)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            label = split_id(r[1])[1] if by == "function" else hour_key(by, int(r[1]) * (24 if by == "day" else 1))
            out.append(UsageRow(r[0], label, *_ints(r[2:])))
        return out

    def usage_records(
        self, tenant: str | None, start: float, end: float, *, after: str | None = None, limit: int = 1000
    ) -> list[UsageRecord]:
        q = self._between(sa.select(usage), tenant, start, end).order_by(usage.c.id).limit(limit)
        if after is not None:
            q = q.where(usage.c.id > after)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(q)]

    def get_usage(self, record_id: str) -> UsageRecord | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(usage).where(usage.c.id == record_id)).first()
        return None if r is None else _record(r)

    def tenant_totals(self, start: float, end: float) -> dict[str, Usage]:
        requests, _, _, _, mb_ms, provisioned = _sums()
        q = self._between(sa.select(usage.c.tenant, requests, mb_ms, provisioned), None, start, end)
        with self.engine.connect() as conn:
            return {r[0]: Usage(*_ints(r[1:])) for r in conn.execute(q.group_by(usage.c.tenant))}

    # -- tenants' billing settings -------------------------------------------------------------------

    def get_tenant_billing(self, tenant: str) -> TenantBilling | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(tenant_billing).where(tenant_billing.c.tenant == tenant)).first()
        return None if r is None else _billing(r)

    def list_tenant_billing(self) -> list[TenantBilling]:
        with self.engine.connect() as conn:
            return [_billing(r) for r in conn.execute(sa.select(tenant_billing).order_by(tenant_billing.c.tenant))]

    def set_tenant_billing(self, billing: TenantBilling, now: float) -> None:
        cap = None if billing.monthly_spend_cap is None else str(billing.monthly_spend_cap)
        with self.writes.begin() as conn:
            done = conn.execute(
                tenant_billing.update().where(tenant_billing.c.tenant == billing.tenant)
                .values(plan=billing.plan, monthly_spend_cap=cap, updated_at=now)
            ).rowcount  # fmt: skip
            if not done:
                conn.execute(tenant_billing.insert().values(tenant=billing.tenant, plan=billing.plan,
                                                            monthly_spend_cap=cap, updated_at=now))  # fmt: skip


def _billing(r: sa.Row) -> TenantBilling:
    return TenantBilling(r.tenant, r.plan, None if r.monthly_spend_cap is None else Decimal(r.monthly_spend_cap))
