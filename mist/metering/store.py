"""What metering needs from the database: the usage ledger and tenants' billing settings.

`mist.metering.sqlusage.SqlUsage` implements it over SQLAlchemy (mixed into
`mist.control.sqlstore.SqlStore`, so a settlement of an asynchronous attempt stores its usage in
the same transaction), `mist.testing.stores.MemoryStore` in memory; the same contract tests
(tests/control/test_usage_store_contract.py) run against SQLite, PostgreSQL and the fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from mist.core.pricing import Usage
from mist.errors import InvalidRequest
from mist.metering.plans import TenantBilling
from mist.metering.usage import HOUR_S, INVOCATION, UsageRecord, gb_s_text
from mist.models import split_id

GROUPINGS = ("function", "day", "hour")


@dataclass(frozen=True)
class UsageRow:
    """Usage totals of one tenant and one group (a function, a UTC day or a UTC hour)."""

    tenant: str
    key: str  # the function; "2026-11-26"; "2026-11-26T04:00Z"
    requests: int = 0  # invocation attempts that ran (each billed as a request)
    failed: int = 0  # of which ended in a function error
    cold_starts: int = 0
    billed_ms: int = 0  # invocations only
    mb_ms: int = 0  # compute: memory x billed ms
    provisioned_mb_ms: int = 0  # provisioned instances: memory x instances x ms

    @property
    def usage(self) -> Usage:
        return Usage(self.requests, self.mb_ms, self.provisioned_mb_ms)

    def to_json(self) -> dict[str, object]:
        return {
            "tenant": self.tenant, "key": self.key, "requests": self.requests, "failed": self.failed,
            "cold_starts": self.cold_starts, "billed_ms": self.billed_ms, "mb_ms": self.mb_ms,
            "gb_s": gb_s_text(self.mb_ms), "provisioned_mb_ms": self.provisioned_mb_ms,
            "provisioned_gb_s": gb_s_text(self.provisioned_mb_ms),
        }  # fmt: skip


def group_key(by: str, record: UsageRecord) -> str:
    """The group of a record in a report `by` function, day or hour (UTC)."""
    if by == "function":
        return split_id(record.function)[1]  # the function's name in its tenant
    return hour_key(by, record.hour)


def hour_key(by: str, hour: int) -> str:
    dt = datetime.fromtimestamp(hour * HOUR_S, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d") if by == "day" else dt.strftime("%Y-%m-%dT%H:00Z")


def check_grouping(by: str) -> str:
    if by not in GROUPINGS:
        raise InvalidRequest(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    return by


def add_to_row(row: UsageRow, r: UsageRecord) -> UsageRow:
    """`row` plus one record (the in-memory fake and tests sum records this way)."""
    invocation = r.kind == INVOCATION
    return UsageRow(
        row.tenant, row.key, row.requests + r.requests, row.failed + (r.outcome == "failed"),
        row.cold_starts + (invocation and r.cold_start), row.billed_ms + (r.billed_ms if invocation else 0),
        row.mb_ms + (r.mb_ms if invocation else 0), row.provisioned_mb_ms + (0 if invocation else r.mb_ms),
    )  # fmt: skip


class UsageStore(Protocol):
    def add_usage(self, records: Sequence[UsageRecord]) -> int:
        """Store the records whose id is not stored yet, in one durable transaction (on SQLite
        synchronous=FULL); the number stored. A record already stored is never counted twice."""

    def usage_rows(self, tenant: str | None, start: float, end: float, by: str) -> list[UsageRow]:
        """Totals of the records that started in [start, end), per tenant and group (`by`:
        function, day or hour), ordered by tenant then group."""

    def usage_records(
        self, tenant: str | None, start: float, end: float, *, after: str | None = None, limit: int = 1000
    ) -> list[UsageRecord]:
        """The records that started in [start, end), by id, the first `limit` with id > `after`."""

    def get_usage(self, record_id: str) -> UsageRecord | None: ...

    def tenant_totals(self, start: float, end: float) -> dict[str, Usage]:
        """Each tenant's usage of the records that started in [start, end)."""

    def get_tenant_billing(self, tenant: str) -> TenantBilling | None: ...

    def list_tenant_billing(self) -> list[TenantBilling]:
        """Every tenant with settings of its own, by name."""

    def set_tenant_billing(self, billing: TenantBilling, now: float) -> None: ...
