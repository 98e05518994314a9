"""Which scheduler processes are alive, where their cluster API is, and the load they report.

Every scheduler process (`mist up --db URL --cluster-listen ...`) reports itself every fourth
of the lease TTL: its holder id, its cluster API's address (where other processes forward the
invocations of its shards) and the requests per second it placed per shard. The shard manager
reads the live ones — reported within the TTL, by the store's clock — to know the owners it may
give shards to and the load to even; every process reads them to know where an owner listens.

    report(holder, address, rates)  upsert this process's row (the store stamps the time)
    live(within_s)                  the rows reported within the last `within_s` seconds
    leave(holder)                   a clean stop: the row goes at once

PostgreSQL: `PgSchedulerDirectory` below (table `cluster_schedulers`); in memory:
mist/testing/cluster.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mist.cluster.pg import reachable
from mist.cluster.schema import schedulers


@dataclass(frozen=True)
class SchedulerRecord:
    holder: str
    address: str
    rates: Mapping[int, float] = field(default_factory=dict)  # shard start -> requests/s


class SchedulerDirectory(Protocol):
    def report(self, holder: str, address: str, rates: Mapping[int, float]) -> None: ...

    def live(self, within_s: float) -> list[SchedulerRecord]: ...

    def leave(self, holder: str) -> None: ...


def _rates_json(rates: Mapping[int, float]) -> dict[str, float]:
    return {str(start): round(rate, 3) for start, rate in rates.items()}


def _rates(body: Mapping[str, float]) -> dict[int, float]:
    return {int(start): float(rate) for start, rate in body.items()}


class PgSchedulerDirectory:
    def __init__(self, *, engine: sa.Engine) -> None:
        self.engine = engine

    def report(self, holder: str, address: str, rates: Mapping[int, float]) -> None:
        now = sa.func.now()
        stmt = insert(schedulers).values(holder=holder, address=address, rates=_rates_json(rates), reported_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=[schedulers.c.holder],
                                          set_={"address": address, "rates": _rates_json(rates), "reported_at": now})
        with reachable(), self.engine.connect() as conn:
            conn.execute(stmt)

    def live(self, within_s: float) -> list[SchedulerRecord]:
        t = schedulers.c
        since = sa.func.now() - sa.bindparam("within", timedelta(seconds=within_s), type_=sa.Interval)
        stmt = sa.select(t.holder, t.address, t.rates).where(t.reported_at > since).order_by(t.holder)
        with reachable(), self.engine.connect() as conn:
            return [SchedulerRecord(r.holder, r.address, _rates(r.rates)) for r in conn.execute(stmt)]

    def leave(self, holder: str) -> None:
        with reachable(), self.engine.connect() as conn:
            conn.execute(schedulers.delete().where(schedulers.c.holder == holder))
