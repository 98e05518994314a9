"""The `cluster` fixture: each contract test runs against the real PostgreSQL and the in-memory
fakes. `cluster.elapse(s)` lets the store's clock move on: the fakes' clock jumps, PostgreSQL's
is waited for (so PostgreSQL tests use TTLs of a few tenths of a second)."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mist.cluster.directory import PgSchedulerDirectory
from mist.cluster.membership import HealthPolicy
from mist.cluster.pg import connect
from mist.cluster.schema import metadata
from mist.cluster.sqlleases import PgLeaseStore
from mist.cluster.sqlmembership import PgMembership
from mist.cluster.sqlshardmap import PgShardMapStore
from mist.testing.cluster import ManualClock, MemoryLeaseStore, MemoryMembership, MemorySchedulerDirectory, MemoryShardMapStore

POLICY = HealthPolicy(interval_s=0.1, late_after_s=0.3, timeout_s=1.0)


@dataclass
class Cluster:
    kind: str
    leases: Any  # LeaseStore
    members: Any  # MembershipStore
    maps: Any  # ShardMapStore
    elapse: Callable[[float], None]
    directory: Any = None  # SchedulerDirectory


@pytest.fixture(scope="session")
def pg_engine(pg_url):
    engine = connect(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "memory"])
def cluster(request):
    if request.param == "memory":
        clock = ManualClock()
        yield Cluster(
            "memory",
            MemoryLeaseStore(clock),
            MemoryMembership(clock, timeout_s=POLICY.timeout_s),
            MemoryShardMapStore(),
            clock.advance,
            MemorySchedulerDirectory(clock),
        )
        return
    engine = request.getfixturevalue("pg_engine")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)}")
    yield Cluster(
        "postgresql",
        PgLeaseStore(engine=engine),
        PgMembership(timeout_s=POLICY.timeout_s, engine=engine),
        PgShardMapStore(engine=engine),
        time.sleep,
        PgSchedulerDirectory(engine=engine),
    )


def race(n: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run attempt(0..n-1) on n threads released at once; the results that are not None."""
    barrier, results = threading.Barrier(n), []

    def run(i: int) -> None:
        barrier.wait()
        if (r := attempt(i)) is not None:
            results.append(r)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
