"""Which scheduler processes are alive, where their cluster API is, and the load they report.

Every scheduler process (`mist up --db URL --cluster-listen ...`) reports itself every fourth
of the lease TTL: its holder id, its cluster API's address (where other processes forward the
invocations of its shards), the requests per second it placed per shard, the busiest function
of each of those shards with its rate (`hot`: at most 64, the busiest shards' first: mist/cluster/owners.py `busiest`, so a row
stays a few kilobytes however many functions run) and the shard map version it follows. The
shard manager reads the live ones — reported within the TTL, by the store's clock — to know the
owners it may give shards to, the load to even and where a hot shard may be split (a shard
mostly carried by one function is not: halving its range would not halve its load), and it
changes the map only once every live owner follows the current version; every process reads
them to know where an owner listens.

    report(holder, address, rates, hot=, version=)  upsert this process's row (the store stamps the time)
    live(within_s)                  the rows reported within the last `within_s` seconds
    leave(holder)                   a clean stop: the row goes at once

PostgreSQL: `PgSchedulerDirectory` below (table `cluster_schedulers`); in memory:
mist/testing/cluster.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mist.cluster.pg import reachable
from mist.cluster.schema import schedulers


_NONE: Mapping = MappingProxyType({})


@dataclass(frozen=True)
class SchedulerRecord:
    holder: str
    address: str
    rates: Mapping[int, float] = field(default_factory=dict)  # shard start -> requests/s
    hot: Mapping[str, float] = field(default_factory=dict)  # function -> requests/s: each shard's busiest
    version: int = 0  # the shard map version it follows


class SchedulerDirectory(Protocol):
    def report(self, holder: str, address: str, rates: Mapping[int, float], *,
               hot: Mapping[str, float] = _NONE, version: int = 0) -> None: ...

    def live(self, within_s: float) -> list[SchedulerRecord]: ...

    def leave(self, holder: str) -> None: ...


def _rates_json(rates: Mapping[int, float]) -> dict[str, float]:
    return {str(start): round(rate, 3) for start, rate in rates.items()}


def _rates(body: Mapping[str, float]) -> dict[int, float]:
    return {int(start): float(rate) for start, rate in body.items()}


def _hot_json(hot: Mapping[str, float]) -> dict[str, float]:
    return {fn: round(rate, 3) for fn, rate in hot.items()}


class PgSchedulerDirectory:
    def __init__(self, *, engine: sa.Engine) -> None:
        self.engine = engine

    def report(self, holder: str, address: str, rates: Mapping[int, float], *,
               hot: Mapping[str, float] = _NONE, version: int = 0) -> None:
        row = {"address": address, "rates": _rates_json(rates), "hot": _hot_json(hot), "version": version,
               "reported_at": sa.func.now()}
        stmt = insert(schedulers).values(holder=holder, **row)
        stmt = stmt.on_conflict_do_update(index_elements=[schedulers.c.holder], set_=row)
        with reachable(), self.engine.connect() as conn:
            conn.execute(stmt)

    def live(self, within_s: float) -> list[SchedulerRecord]:
        t = schedulers.c
        since = sa.func.now() - sa.bindparam("within", timedelta(seconds=within_s), type_=sa.Interval)
        stmt = sa.select(t.holder, t.address, t.rates, t.hot, t.version).where(t.reported_at > since).order_by(t.holder)
        with reachable(), self.engine.connect() as conn:
            return [SchedulerRecord(r.holder, r.address, _rates(r.rates), {str(f): float(v) for f, v in r.hot.items()},
                                    int(r.version)) for r in conn.execute(stmt)]

    def leave(self, holder: str) -> None:
        with reachable(), self.engine.connect() as conn:
            conn.execute(schedulers.delete().where(schedulers.c.holder == holder))
